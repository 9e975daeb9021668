"""Many connections fast, encrypted as the store writes them (bench/memory.py).

The store binds each ciphertext to its row id (crypto.py), so one payload cannot be
reused: every row is encrypted in a loop with the store's own ``token_columns`` (the
only code that encrypts a connection's tokens), copying every other column from a
template connection made the real way (``tokenkeep connections import``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from tokenkeep.store import Store
from tokenkeep.store.connection_tokens import token_columns
from tokenkeep.store.models import ConnectionRow

BATCH = 5000


async def clone_connections(
    store: Store, template_id: str, count: int, *, access_token: str, refresh_token: str
) -> int:
    """Insert ``count`` copies of connection ``template_id`` (ids ``bulk-<n>``)."""
    table = ConnectionRow.__table__
    async with store.db.read() as session:
        row = (await session.execute(select(table).where(table.c.id == template_id))).one()
    template: dict[str, Any] = dict(row._mapping)
    done = 0
    while done < count:
        rows = []
        for n in range(done, min(count, done + BATCH)):
            cid = f"bulk-{n}"
            rows.append(
                {
                    **template,
                    "id": cid,
                    **token_columns(store.keyring, cid, access_token, refresh_token),
                }
            )
        async with store.db.write() as session:
            await session.execute(insert(table), rows)
        done += len(rows)
    return done
