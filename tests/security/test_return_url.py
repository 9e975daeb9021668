"""``return_url`` is safe: never an open redirect, never a header break (issue 13, defect 5).

``POST /connect/sessions`` refuses a ``return_url`` that is not an absolute http(s) URL
without control characters, or that is not under an entry of
``TOKENKEEP_CONNECT_RETURN_URLS`` (default: the gateway's own origin), with a 422 naming the
setting and nothing stored. The callback checks again before it redirects: a session stored
while the allow-list was wider ends on the plain success page, not at the old target.
Both engines; the flow runs against the emulator (the ``flow`` fixture of the connect tests).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from tests.api.test_connect import Flow, flow  # noqa: F401 (the fixture, reused)

from tokenkeep.store.models import ConnectionRow, ConnectSessionRow

REFUSED = [
    "http://evil.example/\r\nX: y",  # the report: a header break, and a foreign host
    "http://evil.example/",
    "https://evil.example/done",
    "https://app.example.evil.example/",  # an allowed name as a prefix of another host
    "https://app.example@evil.example/",  # user info: the browser goes to evil.example
    "https://evil.example\\@app.example/",  # a backslash: browsers read it as "/"
    "http://app.example/",  # another scheme than the allowed https origin
    "https://app.example:8443/",  # another port
    "//evil.example/",  # scheme-relative
    "/relative/path",
    "javascript:alert(1)",
    "https://app.example/\x00",
    "https://app.example/\n",  # a final line break: "$" in a Python regex would pass it
    "https://app.example/a b",
    "https://gw.example/connected/../admin",  # out of the prefix once resolved
    "https://gw.example/connected%2f..%2f..%2fadmin",
]
ALLOWED = [
    "https://app.example/",
    "https://app.example/done?x=1",
    "https://APP.example:443/done",
    "https://gw.example/connected/",
    "https://gw.example/connected/ok?tenant=t1",
]
SETTING = "https://app.example, https://gw.example/connected/"


@pytest.mark.parametrize("return_url", REFUSED)
async def test_a_return_url_off_the_allow_list_is_refused(
    flow: Flow,  # noqa: F811 (the imported fixture)
    return_url: str,
) -> None:
    flow.gateway.settings.connect_return_urls = SETTING
    r = await flow.http.post(
        "/connect/sessions", json={"integration": "sf", "return_url": return_url}
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert "TOKENKEEP_CONNECT_RETURN_URLS" in error["message"]
    assert "\r" not in r.text  # never echoed back raw
    assert await flow.count(ConnectSessionRow) == 0


@pytest.mark.parametrize("return_url", ALLOWED)
async def test_a_return_url_on_the_allow_list_is_accepted(
    flow: Flow,  # noqa: F811
    return_url: str,
) -> None:
    flow.gateway.settings.connect_return_urls = SETTING
    await flow.start(return_url=return_url)
    assert await flow.count(ConnectSessionRow) == 1


async def test_by_default_only_the_gateways_own_pages_are_allowed(
    flow: Flow,  # noqa: F811
) -> None:
    flow.gateway.settings.connect_return_urls = None
    await flow.start(return_url="http://127.0.0.1:8400/done")  # the gateway's public origin
    r = await flow.http.post(
        "/connect/sessions", json={"integration": "sf", "return_url": "https://app.example/"}
    )
    assert r.status_code == 422
    assert "TOKENKEEP_CONNECT_RETURN_URLS" in r.json()["error"]["message"]


async def test_the_callback_redirects_only_to_an_allowed_place(
    flow: Flow,  # noqa: F811
) -> None:
    user = flow.emu.orgs[0].users[0]
    flow.gateway.settings.connect_return_urls = SETTING
    params = await flow.authorize_params(await flow.start(return_url="https://app.example/x"))
    r = await flow.callback(flow.consent(params, user.username))
    assert r.status_code == 302
    back = urlsplit(r.headers["location"])
    assert (back.scheme, back.netloc, back.path) == ("https", "app.example", "/x")
    assert parse_qs(back.query)["status"] == ["connected"]


async def test_a_session_stored_before_the_allow_list_shrank_never_redirects_there(
    flow: Flow,  # noqa: F811
) -> None:
    user = flow.emu.orgs[0].users[1]
    flow.gateway.settings.connect_return_urls = SETTING
    params = await flow.authorize_params(await flow.start(return_url="https://app.example/x"))
    flow.gateway.settings.connect_return_urls = "https://gw.example/connected/"
    r = await flow.callback(flow.consent(params, user.username))
    # The connection is stored (the user did consent), but the browser stays with us.
    assert r.status_code == 200, r.headers
    assert "location" not in r.headers
    assert "Connected" in r.text
    assert await flow.count(ConnectionRow) == 1
