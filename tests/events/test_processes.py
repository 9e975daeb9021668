"""The outbox across OS processes: a gateway killed mid-delivery loses nothing, and two
gateways on one PostgreSQL database deliver every event exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tests.api.api_helpers import import_body
from tests.events.processes import serve_process
from tests.events.receiver import eventually, receiving

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.events import new_webhook_secret
from tokenkeep.runtime import Gateway
from tokenkeep.vocabulary import EventType

pytestmark = pytest.mark.multiprocess

API_KEY = "tk_webhook-processes-key"


async def test_the_outbox_survives_a_gateway_killed_between_commit_and_delivery(
    db_url: str, tmp_path: Path
) -> None:
    keys = Keyring.generate("k1").export().reveal()
    secret = new_webhook_secret().reveal()
    async with receiving(hang=1) as rx:
        env = {
            "TOKENKEEP_DATABASE_URL": db_url,
            "TOKENKEEP_SECRET_KEY": API_KEY,
            "TOKENKEEP_ENCRYPTION_KEYS": keys,
            "TOKENKEEP_WEBHOOK_URL": rx.url,
            "TOKENKEEP_WEBHOOK_SECRET": secret,
            "TOKENKEEP_WEBHOOK_POLL_SECONDS": "0.05",
        }
        async with serve_process(tmp_path, env=env, name="a") as (proc, base_url):
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(base_url=base_url, headers=headers) as api:
                put = await api.put(
                    "/integrations/sf", json={"client_id": "c", "client_secret": "s"}
                )
                assert put.status_code == 201
                created = await api.post("/connections", json=import_body("acme"))
                assert created.status_code == 201  # the event is committed with the row
            # The process is sending it (the receiver holds the request): kill it now.
            await eventually(lambda: len(rx.got) == 1)
            proc.kill()
            proc.wait(timeout=20)
        event_id = rx.got[0].webhook_id

        # A new gateway (in this process, on a clock we move) delivers it once the dead
        # one's claim has expired -- with the same webhook-id.
        clock = ManualClock(time.time())
        gateway = Gateway(
            load_settings(
                data_dir=tmp_path / "b",
                database_url=db_url,
                secret_key=API_KEY,
                encryption_keys=keys,
                allow_insecure_loopback=True,
                scheduler_enabled=False,
                webhook_url=rx.url,
                webhook_secret=secret,
            ),
            clock=clock,
        )
        await gateway.start()
        try:
            event = await gateway.store.events.get_event(event_id)
            assert event.status == "pending"
            assert event.event_type == EventType.CONNECTION_CREATED
            await asyncio.sleep(0.3)
            assert len(rx.got) == 1  # the claim is still the dead process's
            clock.advance(300)
            await eventually(lambda: len(rx.got) == 2)

            async def delivered() -> bool:
                return (await gateway.store.events.get_event(event_id)).status == "delivered"

            await eventually(delivered)
        finally:
            await gateway.stop()
    assert rx.ids() == [event_id, event_id]


async def test_two_gateway_processes_deliver_each_event_exactly_once(
    pg_url: str, tmp_path: Path
) -> None:
    keys = Keyring.generate("k1").export().reveal()
    secret = new_webhook_secret().reveal()
    n = 60
    async with receiving(delay=0.02) as rx:
        settings = {
            "webhook_url": rx.url,
            "webhook_secret": secret,
            "webhook_poll_seconds": 0.05,
            "webhook_batch_size": 4,
        }
        env = {
            "TOKENKEEP_DATABASE_URL": pg_url,
            "TOKENKEEP_SECRET_KEY": API_KEY,
            "TOKENKEEP_ENCRYPTION_KEYS": keys,
            **{f"TOKENKEEP_{k.upper()}": str(v) for k, v in settings.items()},
        }
        gateway = Gateway(
            load_settings(
                data_dir=tmp_path / "a",
                database_url=pg_url,
                secret_key=API_KEY,
                encryption_keys=keys,
                allow_insecure_loopback=True,
                scheduler_enabled=False,
                **settings,
            )
        )
        await gateway.start()
        try:
            async with serve_process(tmp_path, env=env, name="b"):
                store = gateway.store
                ids = []
                for i in range(n):
                    async with store.db.write() as session:
                        ids.append(
                            store.outbox.add_event(
                                session,
                                EventType.ORG_SESSION_ERROR_SPIKE,
                                payload={"n": i},
                                org_id=f"00Dorg{i:03d}",
                            )
                        )
                await eventually(lambda: len(set(rx.ids())) == n, within=60)
                await asyncio.sleep(1.0)  # any duplicate would have landed by now
            entries = await store.operations.list(kind="webhook", limit=1000)
        finally:
            await gateway.stop()
    counts = Counter(rx.ids())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1]
    assert len(entries) == n
    assert {e.outcome for e in entries} == {"delivered"}
    workers = Counter(e.detail["worker"] for e in entries)
    assert len(workers) == 2, workers  # both processes took part
