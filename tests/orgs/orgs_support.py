"""Several real gateways (each with its own engine and HTTP server) on ONE database, in
front of one emulator: what ``tokenkeep serve`` on N hosts looks like."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tokenkeep.config import load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.harness import EMULATOR_INTEGRATION, connect_through_flow, register_emulator_app
from tokenkeep.runtime import Gateway
from tokenkeep.secret import Secret
from tokenkeep.server import ServerHandle, build_asgi_app, free_port

ACCOUNTS = "/services/data/v60.0/sobjects/Account"
LIMITS = "/services/data/v60.0/limits"


@dataclass
class Node:
    """One gateway of the fleet."""

    gateway: Gateway
    base_url: str
    api_key: Secret
    keys: str = ""  # the fleet's exported keyring (another process can share it)

    def proxy(self, connection_id: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.base_url}/c/{connection_id}",
            headers={"Authorization": f"Bearer {self.api_key.reveal()}"},
            timeout=30,
        )

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key.reveal()}"},
            timeout=30,
        )


@contextlib.asynccontextmanager
async def fleet(
    emu: Emulator, db_url: str, tmp_path: Path, *, count: int = 2, **settings: Any
) -> AsyncIterator[list[Node]]:
    """``count`` started gateways sharing ``db_url`` and one keyring; the emulator's app is
    registered once."""
    api_key = Secret("tk_" + secrets.token_urlsafe(32))
    keys = Keyring.generate("k1").export().reveal()
    nodes: list[Node] = []
    servers: list[ServerHandle] = []
    try:
        for i in range(count):
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            gateway = Gateway(
                load_settings(
                    data_dir=tmp_path / f"node{i}",
                    database_url=db_url,
                    secret_key=api_key.reveal(),
                    encryption_keys=keys,
                    egress_address=None,
                    webhook_url=None,
                    allow_insecure_loopback=True,
                    host="127.0.0.1",
                    port=port,
                    public_url=base_url,
                    scheduler_enabled=False,
                    **settings,
                )
            )
            app = build_asgi_app(gateway)
            await gateway.start()
            server = ServerHandle(app, host="127.0.0.1", port=port)
            servers.append(server)
            nodes.append(Node(gateway, await server.start(), api_key, keys))
        await register_emulator_app(emu, nodes[0].base_url, api_key, EMULATOR_INTEGRATION)
        yield nodes
    finally:
        for server in servers:
            await server.stop()
        for node in nodes:
            await node.gateway.stop()


async def connect(node: Node, emu: Emulator, connection_id: str, *, user: int = 0) -> None:
    """Connect emulator user ``user`` of the first org through ``node``'s connect flow."""
    emu_user = emu.orgs[0].users[user]
    await connect_through_flow(
        node.base_url,
        node.api_key,
        EMULATOR_INTEGRATION,
        connection_id,
        username=emu_user.username,
        password=emu_user.password,
    )


async def eventually(check: Callable[[], Any], *, within: float, step: float = 0.02) -> float:
    """Wait until ``check()`` is truthy; the seconds it took (fails after ``within``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await _truthy(check()):
        if loop.time() - start > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(step)
    return loop.time() - start


async def _truthy(value: Any) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)
