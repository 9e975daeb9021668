"""The control API's request log (src/tokenkeep/api/middleware.py): no bearer value in a path."""

from __future__ import annotations

import secrets

from structlog.testing import capture_logs
from tests.api.api_helpers import Api


async def test_a_connect_link_token_never_reaches_the_request_log(api: Api) -> None:
    token = secrets.token_urlsafe(32)
    with capture_logs() as logs:
        opened = await api.client.get(f"/connect/{token}")
        listed = await api.client.get("/integrations")
    assert opened.status_code == 404  # unknown link: a plain page, and a log line
    assert listed.status_code == 200
    lines = [entry for entry in logs if entry.get("event") == "request"]
    assert [line["path"] for line in lines] == ["/connect/***", "/integrations"]
    assert not [entry for entry in logs if token in repr(entry)]
