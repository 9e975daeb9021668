"""Refresh stampede across OS processes: exactly one token call, on SQLite and PostgreSQL,
with rotation off and on.

Several worker processes (``durable_worker.py``: the coordinator every gateway runs; 2 on
SQLite, 4 on PostgreSQL) are released together with 100 concurrent ``fresh_token`` calls
each, after the connection's session expired upstream. The emulator counts the
``refresh_token`` grants; every caller must get the same, fresh token (accepted by the
emulator's data API) and the stored refresh token must be the newest one issued.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.lifecycle.lifecycle_support import token_client
from tests.reliability.expired_connection import (
    expired_connection,
    newest_refresh_token_is,
    run_stampede,
)

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.store import Store

CALLS_PER_PROCESS = 100


@pytest.mark.multiprocess
@pytest.mark.parametrize("rotation", [False, True], ids=["no-rotation", "rotation"])
async def test_a_stampede_over_processes_makes_one_token_call(
    real_store: Store, keyring: Keyring, db_url: str, tmp_path: Path, rotation: bool
) -> None:
    processes = 2 if db_url.startswith("sqlite") else 4
    async with Emulator.running(orgs=1) as emu, token_client(SystemClock()) as client:
        await expired_connection(real_store, emu, client, rotation=rotation)
        before = await real_store.connections.get("c1", with_credentials=True)
        # A slow token call: the other processes arrive while it is in flight.
        emu.admin.add_fault(
            {"target": "token", "kind": "latency", "latency_seconds": 0.5, "count": 1}
        )
        outputs = await run_stampede(
            [{"owner": f"gw-{i}"} for i in range(processes)],
            {
                "db_url": db_url,
                "keys": keyring.export().reveal(),
                "connection_id": "c1",
                "data_dir": str(tmp_path / "data"),
                "lease_seconds": 30.0,
                "calls": CALLS_PER_PROCESS,
                "probe": True,
            },
        )
        grants = emu.admin.requests(grant_type="refresh_token")
        stored = await real_store.connections.get("c1", with_credentials=True)
        assert stored.credentials is not None
        assert before.credentials is not None
        stored_refresh = stored.credentials.refresh_token
        assert stored_refresh is not None
        assert newest_refresh_token_is(emu, stored_refresh.reveal())
    assert [(g["status"]) for g in grants] == [200]
    assert [o["errors"] for o in outputs] == [[]] * processes
    assert sum(o["ok"] for o in outputs) == processes * CALLS_PER_PROCESS
    assert sum(o["refreshes"] for o in outputs) == 1
    fingerprints = {fp for o in outputs for fp in o["fingerprints"]}
    assert fingerprints == {stored.credentials.access_token.fingerprint}
    assert [o["probes"] for o in outputs] == [[200]] * processes
    assert (stored.status, stored.version) == ("active", 2)
    assert before.credentials.refresh_token is not None
    rotated = stored_refresh.reveal() != before.credentials.refresh_token.reveal()
    assert rotated == rotation
