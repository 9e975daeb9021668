"""The write pause shared by every gateway (src/tokenkeep/orgs/shared_pause.py), on
PostgreSQL with two real gateways (own engines, own HTTP servers) and the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select
from tests.orgs.orgs_support import ACCOUNTS, LIMITS, connect, eventually, fleet

from tokenkeep.emulator import Emulator
from tokenkeep.store.models import OutboxRow
from tokenkeep.store.records import OrgState


def _writes(emu: Emulator) -> int:
    return len([r for r in emu.admin.requests(path=ACCOUNTS) if r["method"] == "POST"])


async def _org_events(node_db: object) -> list[tuple[str, str | None]]:
    from tokenkeep.store import Database

    assert isinstance(node_db, Database)
    async with node_db.read() as session:
        rows = (await session.execute(select(OutboxRow).order_by(OutboxRow.created_at))).scalars()
        return [(r.event_type, r.org_id) for r in rows if r.event_type.startswith("org.")]


async def test_a_pause_learned_by_one_gateway_stops_the_others_writes_within_a_second(
    pg_url: str, tmp_path: Path
) -> None:
    async with (
        Emulator.running(orgs=1) as emu,
        fleet(emu, pg_url, tmp_path, write_pause_probe_seconds=2.0) as (a, b),
    ):
        await connect(a, emu, "acme")
        org_id = emu.orgs[0].org_id
        emu.admin.patch_org(org_id, {"read_only": True})
        async with a.proxy("acme") as via_a, b.proxy("acme") as via_b:
            refused = await via_a.post(ACCOUNTS, json={"Name": "A"})
            assert refused.headers["Tokenkeep-Cause"] == "maintenance"
            took = await eventually(lambda: b.gateway.write_pause.is_paused(org_id), within=1.0)
            assert took < 1.0
            before = _writes(emu)
            paused = await via_b.post(ACCOUNTS, json={"Name": "B"})
            assert paused.status_code == 503
            assert paused.json()["error"]["code"] == "org_write_paused"
            assert 1 <= int(paused.headers["Retry-After"]) <= 2
            assert (await via_b.get(LIMITS)).status_code == 200  # reads pass
            assert _writes(emu) == before  # B never sent its write upstream

            # Due for a probe, still in maintenance: 20 writes from both gateways at once
            # let exactly ONE through (the CAS claim), the rest wait.
            await asyncio.sleep(2.1)
            answers = await asyncio.gather(
                *(c.post(ACCOUNTS, json={"Name": "P"}) for c in [via_a, via_b] * 10)
            )
            assert sorted(r.status_code for r in answers).count(503) == 20
            assert _writes(emu) == before + 1

            # Maintenance over: the next probe (from B) resumes writes for A too.
            emu.admin.patch_org(org_id, {"read_only": False})
            await asyncio.sleep(2.1)
            assert (await via_b.post(ACCOUNTS, json={"Name": "E"})).status_code == 201
            await eventually(lambda: not a.gateway.write_pause.is_paused(org_id), within=1.0)
            assert (await via_a.post(ACCOUNTS, json={"Name": "F"})).status_code == 201
        state = await a.gateway.store.orgs.get(org_id)
        assert isinstance(state, OrgState)
        assert not state.paused
        assert await _org_events(a.gateway.store.db) == [
            ("org.maintenance_started", org_id),
            ("org.maintenance_ended", org_id),
        ]


async def test_two_gateways_meeting_maintenance_at_once_raise_one_started_event(
    pg_url: str, tmp_path: Path
) -> None:
    async with Emulator.running(orgs=1) as emu, fleet(emu, pg_url, tmp_path) as (a, b):
        await connect(a, emu, "acme")
        org_id = emu.orgs[0].org_id
        emu.admin.patch_org(org_id, {"read_only": True})
        async with a.proxy("acme") as via_a, b.proxy("acme") as via_b:
            answers = await asyncio.gather(
                via_a.post(ACCOUNTS, json={"Name": "A"}), via_b.post(ACCOUNTS, json={"Name": "B"})
            )
        assert [r.headers.get("Tokenkeep-Cause") for r in answers] == ["maintenance"] * 2
        await eventually(lambda: _org_events(a.gateway.store.db), within=2.0)
        await asyncio.sleep(0.3)  # both records have landed
        assert await _org_events(a.gateway.store.db) == [("org.maintenance_started", org_id)]
        assert a.gateway.write_pause.is_paused(org_id)
        assert b.gateway.write_pause.is_paused(org_id)


async def test_a_gateway_process_refuses_writes_once_another_learned_the_maintenance(
    pg_url: str, tmp_path: Path
) -> None:
    """The same, with the second gateway a real ``tokenkeep serve`` OS process."""
    import os
    import subprocess
    import sys

    import httpx

    from tokenkeep.server import free_port

    async with Emulator.running(orgs=1) as emu, fleet(emu, pg_url, tmp_path, count=1) as (a,):
        await connect(a, emu, "acme")
        org_id = emu.orgs[0].org_id
        port = free_port()
        env = {
            **os.environ,
            "TOKENKEEP_DATABASE_URL": pg_url,
            "TOKENKEEP_SECRET_KEY": a.api_key.reveal(),
            "TOKENKEEP_ENCRYPTION_KEYS": a.keys,
            "TOKENKEEP_ALLOW_INSECURE_LOOPBACK": "true",
            "TOKENKEEP_DATA_DIR": str(tmp_path / "process-b"),
            "TOKENKEEP_LOG_LEVEL": "WARNING",
        }
        for name in ("TOKENKEEP_EGRESS_ADDRESS", "TOKENKEEP_WEBHOOK_URL"):
            env.pop(name, None)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenkeep",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-scheduler",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            base_b = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {a.api_key.reveal()}"}
            async with httpx.AsyncClient(base_url=base_b, headers=headers, timeout=30) as b:

                async def ready() -> bool:
                    try:
                        return (await b.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(ready, within=30.0, step=0.2)
                assert (await b.get(f"/c/acme{LIMITS}")).status_code == 200
                emu.admin.patch_org(org_id, {"read_only": True})
                async with a.proxy("acme") as via_a:
                    refused = await via_a.post(ACCOUNTS, json={"Name": "A"})
                assert refused.headers["Tokenkeep-Cause"] == "maintenance"
                await asyncio.sleep(1.0)  # the process polls the shared pause every 0.5 s
                before = _writes(emu)
                paused = await b.post(f"/c/acme{ACCOUNTS}", json={"Name": "B"})
                assert paused.status_code == 503, paused.text
                assert paused.json()["error"]["code"] == "org_write_paused"
                assert paused.headers["Tokenkeep-Cause"] == "maintenance"
                assert _writes(emu) == before  # the other process never sent it upstream
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        assert await _org_events(a.gateway.store.db) == [("org.maintenance_started", org_id)]
