"""``tokenkeep.client.simple_salesforce``: unmodified simple-salesforce bound to a connection.

Both modes run the same tour against the emulator behind a real gateway: a paginated query
(``query`` + ``query_more`` + ``query_all``), a create/get/update/delete cycle through
``sf.Account``, then the emulator's clock moves past the session timeout and the next
calls succeed without the caller noticing, with exactly one refresh grant in the
emulator's log.

* proxy: simple-salesforce talks to ``<gateway>/c/<id>`` with the API key as its session
  id; the gateway refreshes and replays.
* direct: simple-salesforce talks to the org itself with the gateway's token; the SDK's
  requests auth renews the session and replays once.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Literal, cast

import pytest
from simple_salesforce import Salesforce, SFType
from simple_salesforce.exceptions import SalesforceResourceNotFound

from tokenkeep.client import Client, simple_salesforce
from tokenkeep.client._simple_salesforce import RebaseAdapter
from tokenkeep.errors import ConfigError, NotFoundError
from tokenkeep.testing import GatewayUnderTest

pytestmark = pytest.mark.tokenkeep_gateway(orgs=1, seed=7)

Mode = Literal["proxy", "direct"]


def _query_tour(sf: Salesforce, contacts: int) -> None:
    page = sf.query("SELECT Id, LastName FROM Contact")
    assert page["totalSize"] == contacts
    assert page["done"] is False
    assert len(page["records"]) == 2000
    rest = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] is True
    ids = {r["Id"] for r in page["records"]} | {r["Id"] for r in rest["records"]}
    assert len(ids) == contacts
    assert sf.query_all("SELECT Id FROM Contact")["totalSize"] == contacts


def _crud_tour(sf: Salesforce, name: str) -> None:
    accounts = cast(SFType, sf.Account)
    created = accounts.create({"Name": name})
    assert created["success"] is True
    account_id = created["id"]
    assert accounts.get(account_id)["Name"] == name
    assert accounts.update(account_id, {"Name": name + " v2"}) == 204
    assert accounts.get(account_id)["Name"] == name + " v2"
    assert accounts.delete(account_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        accounts.get(account_id)


@pytest.mark.parametrize("mode", ["proxy", "direct"])
async def test_simple_salesforce_helper_survives_session_expiry(
    tokenkeep_gateway: GatewayUnderTest, mode: Mode
) -> None:
    gw = tokenkeep_gateway
    contacts = int(gw.emulator.orgs[0].records.count("Contact"))
    assert contacts > 2000, "the seed must give more than one page of Contacts"
    await gw.connect("acme")
    tk = gw.client()
    sf = await asyncio.to_thread(simple_salesforce, tk, "acme", mode=mode, version="60.0")
    try:
        assert sf.sf_version == "60.0"
        await asyncio.to_thread(_query_tour, sf, contacts)
        await asyncio.to_thread(_crud_tour, sf, f"{mode} before expiry")
        before = gw.grants("refresh_token")

        gw.expire_sessions()
        await asyncio.to_thread(_query_tour, sf, contacts)
        assert gw.grants("refresh_token") == before + 1
        await asyncio.to_thread(_crud_tour, sf, f"{mode} after expiry")
        assert gw.grants("refresh_token") == before + 1
    finally:
        sf.session.close()
        tk.close()


async def test_proxy_mode_never_hands_the_token_to_simple_salesforce(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    """In proxy mode the library only ever holds the API key; the URLs it builds go to
    ``/c/<id>`` on the gateway."""
    gw = tokenkeep_gateway
    await gw.connect("acme")
    tk = gw.client()
    try:
        sf = await asyncio.to_thread(simple_salesforce, tk, "acme")
        token = await asyncio.to_thread(tk.get_token, "acme")
        assert sf.session_id == gw.api_key.reveal()
        assert sf.session_id != token.access_token.reveal()
        adapter = sf.session.get_adapter(sf.base_url)
        assert isinstance(adapter, RebaseAdapter)
        assert adapter.rebase(sf.base_url + "query/?q=x") == (
            f"{gw.base_url}/c/acme/services/data/v{sf.sf_version}/query/?q=x"
        )
        sf.session.close()
    finally:
        tk.close()


async def test_direct_mode_asks_for_the_token_up_front(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    """An unknown connection fails when the helper is built (typed), not on the first query."""
    tk = tokenkeep_gateway.client()
    try:
        with pytest.raises(NotFoundError):
            await asyncio.to_thread(simple_salesforce, tk, "nobody", mode="direct")
    finally:
        tk.close()


def test_rebase_adapter_keeps_path_and_query_and_is_idempotent() -> None:
    adapter = RebaseAdapter("https://gw:8400/", lambda: "http://gw:8400/c/acme")
    url = "https://gw:8400/services/data/v59.0/query/?q=SELECT%20Id%20FROM%20Account"
    rebased = adapter.rebase(url)
    assert (
        rebased == "http://gw:8400/c/acme/services/data/v59.0/query/?q=SELECT%20Id%20FROM%20Account"
    )
    assert adapter.rebase(rebased) == rebased
    assert adapter.rebase("https://other:8400/services/x") == "https://other:8400/services/x"
    same_host = RebaseAdapter("https://gw/", lambda: "https://gw/c/acme")
    once = same_host.rebase("https://gw/services/x")
    assert once == "https://gw/c/acme/services/x"
    assert same_host.rebase(once) == once


def test_without_simple_salesforce_installed_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import simple_salesforce` raise ImportError, as when the
    # extra is not installed.
    monkeypatch.setitem(sys.modules, "simple_salesforce", None)
    with Client("http://127.0.0.1:9", "tk_x") as tk, pytest.raises(ConfigError) as missing:
        simple_salesforce(tk, "acme")
    assert "tokenkeep[simple-salesforce]" in missing.value.message
