"""A revoked or deleted API key stops working everywhere within a second (issue 13, defect 6).

Both positive caches are covered: the control API's (``store/api_keys.py``) and the proxy's
synchronous one (``store/api_key_cache.py``, looked up by ``proxy/auth.py``). The revocation
comes from the ``tokenkeep keys revoke`` CLI (another OS process on the same SQLite file),
from the store in-process, from a raw ``DELETE`` on another engine, and, on PostgreSQL, from
a second gateway with a ``tokenkeep serve`` subprocess that must refuse the key too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete
from tests.events.processes import serve_process
from tests.orgs.orgs_support import connect, eventually, fleet

from tokenkeep.clock import SystemClock
from tokenkeep.emulator import Emulator
from tokenkeep.harness import GatewayUnderTest, running_gateway
from tokenkeep.store import Database
from tokenkeep.store.models import ApiKeyRow

LIMITS = "/services/data/v60.0/limits"
WITHIN = 1.0  # the promise: revocation is seen everywhere within this many seconds


def _refused(api: httpx.AsyncClient, proxy: httpx.AsyncClient) -> object:
    """A check for ``eventually``: both the control API and the proxy answer 401."""

    async def check() -> bool:
        listed, proxied = await asyncio.gather(api.get("/connections"), proxy.get(LIMITS))
        return listed.status_code == 401 and proxied.status_code == 401

    return check


def _clients(base_url: str, secret: str, connection_id: str) -> tuple[httpx.AsyncClient, ...]:
    auth = {"Authorization": f"Bearer {secret}"}
    return (
        httpx.AsyncClient(base_url=base_url, headers=auth, timeout=10),
        httpx.AsyncClient(base_url=f"{base_url}/c/{connection_id}", headers=auth, timeout=10),
    )


async def _warm(api: httpx.AsyncClient, proxy: httpx.AsyncClient) -> None:
    """Use the key on both paths, so both positive caches hold it."""
    for _ in range(3):
        assert (await api.get("/connections")).status_code == 200
        assert (await proxy.get(LIMITS)).status_code == 200


async def _gateway_with_key(gw: GatewayUnderTest) -> tuple[str, str]:
    await gw.connect("acme", via="import")
    created = await gw.gateway.store.api_keys.create("app")
    return created.key.id, created.secret.reveal()


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(
        TOKENKEEP_DATA_DIR=str(data_dir),
        TOKENKEEP_DATABASE_URL=f"sqlite:///{data_dir / 'tokenkeep.db'}",
        TOKENKEEP_LOG_LEVEL="WARNING",
        PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"),
    )
    return subprocess.run(
        [sys.executable, "-m", "tokenkeep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def test_a_key_revoked_with_the_cli_is_refused_within_a_second(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw") as gw:
        key_id, secret = await _gateway_with_key(gw)
        api, proxy = _clients(gw.base_url, secret, "acme")
        async with api, proxy:
            await _warm(api, proxy)
            done = await asyncio.to_thread(_cli, tmp_path / "gw", "keys", "revoke", key_id)
            assert "revoked" in done.stdout
            took = await eventually(_refused(api, proxy), within=WITHIN)
            assert took < WITHIN
            body = (await proxy.get(LIMITS)).json()
            assert body["error"]["code"] == "unauthorized"
            # The gateway's own key is untouched.
            own = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
            assert (await api.get("/connections", headers=own)).status_code == 200


async def test_a_key_revoked_in_process_is_refused_at_once(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw") as gw:
        key_id, secret = await _gateway_with_key(gw)
        api, proxy = _clients(gw.base_url, secret, "acme")
        async with api, proxy:
            await _warm(api, proxy)
            await gw.gateway.store.api_keys.revoke(key_id)
            assert (await api.get("/connections")).status_code == 401
            assert (await proxy.get(LIMITS)).status_code == 401


async def test_a_key_deleted_by_another_process_is_refused_within_a_second(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path / "gw") as gw:
        key_id, secret = await _gateway_with_key(gw)
        api, proxy = _clients(gw.base_url, secret, "acme")
        other = Database(
            f"sqlite+aiosqlite:///{tmp_path / 'gw' / 'tokenkeep.db'}", clock=SystemClock()
        )
        async with api, proxy:
            await _warm(api, proxy)
            try:
                async with other.write() as session:
                    await session.execute(delete(ApiKeyRow).where(ApiKeyRow.id == key_id))
            finally:
                await other.close()
            took = await eventually(_refused(api, proxy), within=WITHIN)
            assert took < WITHIN


async def test_a_key_deleted_through_the_store_is_refused_at_once(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw") as gw:
        key_id, secret = await _gateway_with_key(gw)
        api, proxy = _clients(gw.base_url, secret, "acme")
        async with api, proxy:
            await _warm(api, proxy)
            deleted = await gw.gateway.store.api_keys.delete(key_id)
            assert deleted.id == key_id
            assert (await api.get("/connections")).status_code == 401
            assert (await proxy.get(LIMITS)).status_code == 401
            keys = await gw.gateway.store.api_keys.list()
            assert key_id not in {k.id for k in keys}


@pytest.mark.multiprocess
async def test_a_key_revoked_through_one_gateway_is_refused_by_a_serve_process(
    pg_url: str, tmp_path: Path
) -> None:
    async with Emulator.running(orgs=1) as emu, fleet(emu, pg_url, tmp_path, count=1) as [a]:
        await connect(a, emu, "acme")
        created = await a.gateway.store.api_keys.create("app")
        secret = created.secret.reveal()
        env = {
            "TOKENKEEP_DATABASE_URL": pg_url,
            "TOKENKEEP_SECRET_KEY": a.api_key.reveal(),
            "TOKENKEEP_ENCRYPTION_KEYS": a.keys,
        }
        async with serve_process(tmp_path, env=env, name="b") as (_proc, b_url):
            a_api, a_proxy = _clients(a.base_url, secret, "acme")
            b_api, b_proxy = _clients(b_url, secret, "acme")
            async with a_api, a_proxy, b_api, b_proxy:
                await _warm(a_api, a_proxy)
                await _warm(b_api, b_proxy)
                await a.gateway.store.api_keys.revoke(created.key.id)
                assert (await a_api.get("/connections")).status_code == 401
                took = await eventually(_refused(b_api, b_proxy), within=WITHIN)
                assert took < WITHIN
