"""The store side of webhooks on both engines: the standard keys every outbox payload gets
(store/operations.py), endpoint secrets under the keyring (store/webhooks.py)."""

from __future__ import annotations

from sqlalchemy import select, update

from tokenkeep.events import new_webhook_secret
from tokenkeep.store import ConnectionInput, Store, rotate_keys, verify_keyring
from tokenkeep.store.models import ConnectionRow, OutboxRow, WebhookEndpointRow
from tokenkeep.store.operations import STANDARD_KEYS


async def _payloads(store: Store) -> dict[str, dict[str, object]]:
    async with store.db.read() as session:
        rows = (await session.scalars(select(OutboxRow))).all()
    return {r.event_id: dict(r.payload) for r in rows}


async def test_every_payload_gets_the_standard_keys_from_the_row_as_the_writer_sees_it(
    store: Store,
) -> None:
    await store.integrations.put(
        "sf", client_id="c", client_secret="s", login_url="https://login.salesforce.com"
    )
    await store.connections.create(
        ConnectionInput(
            integration_key="sf",
            org_id="00Dorg",
            user_id="005u",
            instance_url="https://acme.my.salesforce.com",
            access_token="00D!x",
            id="c1",
        )
    )
    async with store.db.write() as session:
        # A status change and its event in one transaction: the event reports the new one.
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == "c1")
            .values(status="needs_reauth", status_reason="revoked:inactive_user")
        )
        changed = store.outbox.add_event(
            session, "connection.needs_reauth", connection_id="c1", payload={"attempts": 1}
        )
    async with store.db.write() as session:
        given = store.outbox.add_event(
            session,
            "connection.action_required",
            connection_id="c1",
            payload={"status": "active", "reason": "misconfigured:signature_mismatch", "fix": "x"},
        )
        org = store.outbox.add_event(
            session, "org.maintenance_started", org_id="00Dorg", payload={"probes": 0}
        )
    payloads = await _payloads(store)
    assert payloads[changed] == {
        "attempts": 1,
        "connection_id": "c1",
        "integration": "sf",
        "org_id": "00Dorg",
        "status": "needs_reauth",
        "reason": "revoked:inactive_user",
        "fix": None,
    }
    # What the writer said wins over the row.
    assert (payloads[given]["status"], payloads[given]["reason"], payloads[given]["fix"]) == (
        "active",
        "misconfigured:signature_mismatch",
        "x",
    )
    assert payloads[org] == {
        "probes": 0,
        "connection_id": None,
        "integration": None,
        "org_id": "00Dorg",
        "status": None,
        "reason": None,
        "fix": None,
    }
    assert all(set(STANDARD_KEYS) <= set(p) for p in payloads.values())


async def test_endpoint_secrets_are_encrypted_bound_to_the_row_and_rotated(store: Store) -> None:
    secret = new_webhook_secret()
    endpoint = await store.webhooks.create(url="https://hooks.example.com/x", secret=secret)
    assert endpoint.secret is None
    assert (await store.webhooks.get(endpoint.id, with_secret=True)).secret == secret
    async with store.db.read() as session:
        row = (await session.scalars(select(WebhookEndpointRow))).one()
    assert secret.reveal() not in row.secret_enc
    assert row.key_id == "k1"
    from tokenkeep.crypto import new_key_bytes

    result = await rotate_keys(store.db, store.keyring, "k2", new_key_bytes())
    assert result.rows_remaining == 0
    assert result.rows_reencrypted >= 1
    async with store.db.read() as session:
        assert (await session.scalars(select(WebhookEndpointRow.key_id))).one() == "k2"
    assert (await store.webhooks.get(endpoint.id, with_secret=True)).secret == secret
    await verify_keyring(store.db, store.keyring)
