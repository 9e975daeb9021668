"""A canary token goes in through every door; it must never come out of any.

The canary values do not look like tokens on purpose: redaction by *pattern* cannot hide
a leak, only encryption at rest, redaction by *name* and never echoing secrets can.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from tokenkeep.cli import app as cli_app
from tokenkeep.config import load_settings
from tokenkeep.observability.logging import configure_logging
from tokenkeep.runtime import Gateway
from tokenkeep.server import ServerHandle, build_asgi_app, free_port

TAG = secrets.token_hex(8)
ACCESS = f"canaryaccess{TAG}"
REFRESH = f"canaryrefresh{TAG}"
CLIENT_SECRET = f"canarysecret{TAG}"
PRIVATE_KEY = f"canaryprivatekey{TAG}"
CANARIES = (ACCESS, REFRESH, CLIENT_SECRET, PRIVATE_KEY, TAG)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    # DEBUG on purpose: SQLAlchemy, uvicorn and the gateway log the most there.
    configure_logging("json", "DEBUG", stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TOKENKEEP_DATA_DIR", str(data_dir))
    return data_dir


def assert_no_canary(where: str, blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for canary in CANARIES:
        assert canary.encode() not in data, f"canary {canary!r} found in {where}"


async def exercise_api(data_dir: Path) -> list[httpx.Response]:
    """Import the canaries over a real HTTP server and read everything back."""
    settings = load_settings(port=free_port())
    gateway = Gateway(settings)
    api_key = await gateway.start()
    assert api_key is not None
    server = ServerHandle(build_asgi_app(gateway), host=settings.host, port=settings.port)
    url = await server.start()
    responses: list[httpx.Response] = []
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key.reveal()}"}, timeout=30
        ) as client:

            async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
                response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
                responses.append(response)
                return response

            put = await call(
                "PUT",
                "/integrations/sf",
                json={"client_id": "3MVG9canary", "client_secret": CLIENT_SECRET},
            )
            assert put.status_code == 201
            jwt = await call(
                "PUT",
                "/integrations/jwt",
                json={
                    "client_id": "3MVG9jwt",
                    "auth_mode": "jwt_bearer",
                    "private_key": PRIVATE_KEY,
                },
            )
            assert jwt.status_code == 201
            body = {
                "connection_id": "canary",
                "integration": "sf",
                "credentials": {
                    "access_token": ACCESS,
                    "refresh_token": REFRESH,
                    "instance_url": "https://canary.my.salesforce.com",
                    "id": "https://login.salesforce.com/id/00D5g000004ABCDEAA/0055g000009XYZWAAA",
                },
            }
            assert (await call("POST", "/connections", json=body)).status_code == 201
            # The unhappy paths echo nothing either: duplicate, bad URL, unknown field,
            # unknown integration, a body too large.
            assert (await call("POST", "/connections", json=body)).status_code == 409
            bad_url = {
                **body,
                "connection_id": "c2",
                "credentials": {**body["credentials"], "instance_url": f"http://{ACCESS}.example"},
            }  # type: ignore[dict-item]
            assert (await call("POST", "/connections", json=bad_url)).status_code == 422
            assert (
                await call("POST", "/connections", json={**body, "extra": ACCESS})
            ).status_code == 422
            assert (
                await call(
                    "POST",
                    "/connections",
                    json={**body, "connection_id": "c3", "integration": "nope"},
                )
            ).status_code == 404
            big = {**body, "metadata": {"pad": "x" * settings.max_body_bytes}}
            assert (await call("POST", "/connections", json=big)).status_code == 413
            assert (await call("GET", "/connections")).status_code == 200
            assert (await call("GET", "/connections/canary")).status_code == 200
            assert (await call("GET", "/integrations")).status_code == 200
            assert (await call("GET", "/integrations/sf")).status_code == 200
            await call("GET", "/logs", params={"connection_id": "canary"})
            await call("GET", "/logs")
            assert (await call("GET", "/metrics")).status_code == 200
            # The token is really stored: the store hands it out only when asked.
            stored = await gateway.store.connections.get("canary", with_credentials=True)
            assert stored.credentials is not None
            assert stored.credentials.access_token.reveal() == ACCESS
            assert ACCESS not in repr(stored)
            # While the server still runs, the WAL holds the latest writes.
            for path in sorted(data_dir.rglob("*")):
                if path.is_file():
                    assert_no_canary(str(path), path.read_bytes())
    finally:
        await server.stop()
        await gateway.stop()
    return responses


def test_canary_tokens_never_leave(clean_env: Path, log_stream: io.StringIO) -> None:
    # Synchronous on purpose: the CLI part runs its own event loop.
    responses = asyncio.run(exercise_api(clean_env))

    # The CLI shows the same data and no secret.
    runner = CliRunner()
    for args in (
        ["connections", "show", "canary"],
        ["connections", "list", "--json"],
        ["integrations", "list", "--json"],
        ["integrations", "show", "jwt"],
    ):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 0, result.stderr
        assert_no_canary(f"tokenkeep {' '.join(args)}", result.stdout + result.stderr)

    for response in responses:
        assert_no_canary(
            f"{response.request.method} {response.request.url.path} body", response.content
        )
        assert_no_canary(
            f"{response.request.method} {response.request.url.path} headers",
            json.dumps(dict(response.headers)),
        )
    logs = log_stream.getvalue()
    assert '"event": "request"' in logs  # the log was really captured
    assert_no_canary("the log", logs)
    db_files = [p for p in clean_env.iterdir() if p.name.startswith("tokenkeep.db")]
    assert any(p.name == "tokenkeep.db" for p in db_files)
    for path in sorted(clean_env.rglob("*")):
        if path.is_file():
            assert_no_canary(str(path), path.read_bytes())
