"""The REST data API (rest.handle) driven over ASGI through a tiny Starlette app.

The app stands in for the emulator core: it builds a RestContext for every call (no auth)
and awaits ``rest.handle``, so these tests see the exact responses clients get.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenkeep.clock import ManualClock
from tokenkeep.emulator import rest
from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.records import SEED_CONTACTS, OrgRecords

ORG = "00D5g000004XXXXEAA"
MAINTENANCE = "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"


@dataclass
class Org:
    """The knobs the core would set on the context."""

    records: OrgRecords
    read_only: bool = False
    maintenance_status_code: int = 503
    api_usage: int = 18
    api_limit: int = 15000
    seen_paths: list[str] = field(default_factory=list)


def data_app(org: Org) -> Starlette:
    clock = ManualClock()

    async def endpoint(request: Request) -> Response:
        path = request.url.path
        if path.rstrip("/") == "/services/data":
            return await rest.handle(request, None)
        m = re.fullmatch(r"/services/data/v([^/]+)(/.*)?", path)
        assert m is not None
        org.seen_paths.append(path)
        ctx = RestContext(
            org_id=ORG,
            org_id15=ORG[:15],
            instance_url="http://testserver",
            api_version=m.group(1),
            rest_path=m.group(2) or "",
            user_id="0055g0000000001AAA",
            username="ann@acme.test",
            read_only=org.read_only,
            maintenance_status_code=org.maintenance_status_code,
            records=org.records,
            clock=clock,
            api_usage=org.api_usage,
            api_limit=org.api_limit,
        )
        return await rest.handle(request, ctx)

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


@pytest.fixture
def org() -> Org:
    return Org(OrgRecords(ORG, 42, ManualClock()))


@pytest.fixture
async def client(org: Org) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=data_app(org))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


V = "/services/data/v60.0"


def only_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body, list), body
    assert len(body) == 1, body
    return body[0]


async def test_versions_list_covers_v31_to_v62_with_labels(client: httpx.AsyncClient) -> None:
    for path in ("/services/data", "/services/data/"):
        response = await client.get(path)
        assert response.status_code == 200
        versions = response.json()
        assert [v["version"] for v in versions] == [f"{n}.0" for n in range(31, 63)]
    assert {"label": "Winter '15", "url": "/services/data/v32.0", "version": "32.0"} in versions
    assert versions[-1]["label"] == "Winter '25"
    assert versions[0]["label"] == "Summer '14"


async def test_version_root_limits_and_unknown_version(client: httpx.AsyncClient, org: Org) -> None:
    root = (await client.get(f"{V}/")).json()
    assert root["sobjects"] == f"{V}/sobjects"
    assert root["query"] == f"{V}/query"
    assert root["jobs"] == f"{V}/jobs"
    limits = (await client.get(f"{V}/limits")).json()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - org.api_usage}
    response = await client.get("/services/data/v99.0/limits")
    assert response.status_code == 404
    assert only_error(response)["errorCode"] == "NOT_FOUND"


async def test_describe_global_and_describe(client: httpx.AsyncClient) -> None:
    global_ = (await client.get(f"{V}/sobjects")).json()
    by_name = {s["name"]: s for s in global_["sobjects"]}
    assert by_name["Account"]["keyPrefix"] == "001"
    assert by_name["Lead"]["keyPrefix"] == "00Q"
    assert by_name["Contact"]["urls"]["describe"] == f"{V}/sobjects/Contact/describe"
    describe = (await client.get(f"{V}/sobjects/Account/describe")).json()
    fields = {f["name"]: f for f in describe["fields"]}
    assert fields["Name"]["nillable"] is False
    assert fields["Name"]["createable"] is True
    assert fields["Id"]["type"] == "id"
    assert fields["Id"]["updateable"] is False
    children = {
        (c["relationshipName"], c["childSObject"], c["field"])
        for c in describe["childRelationships"]
    }
    assert ("Contacts", "Contact", "AccountId") in children
    basic = (await client.get(f"{V}/sobjects/Account")).json()
    assert basic["objectDescribe"]["name"] == "Account"
    assert len(basic["recentItems"]) == 5
    missing = await client.get(f"{V}/sobjects/Foo/describe")
    assert missing.status_code == 404
    assert only_error(missing)["errorCode"] == "NOT_FOUND"


async def test_crud_round_trip(client: httpx.AsyncClient) -> None:
    created = await client.post(f"{V}/sobjects/Account/", json={"Name": "Tokenkeep Ltd"})
    assert created.status_code == 201
    body = created.json()
    assert body["success"] is True
    assert body["errors"] == []
    rid = body["id"]
    assert rid.startswith("001")
    assert len(rid) == 18
    got = (await client.get(f"{V}/sobjects/Account/{rid}")).json()
    assert got["attributes"] == {"type": "Account", "url": f"{V}/sobjects/Account/{rid}"}
    assert got["Name"] == "Tokenkeep Ltd"
    assert got["Id"] == rid
    head = await client.head(f"{V}/sobjects/Account/{rid}")
    assert head.status_code == 200
    assert head.content == b""
    some = (await client.get(f"{V}/sobjects/Account/{rid[:15]}", params={"fields": "name"})).json()
    assert set(some) == {"attributes", "Name"}
    patched = await client.patch(f"{V}/sobjects/Account/{rid}", json={"Industry": "Energy"})
    assert patched.status_code == 204
    assert patched.content == b""
    got = (await client.get(f"{V}/sobjects/Account/{rid}")).json()
    assert got["Industry"] == "Energy"
    deleted = await client.delete(f"{V}/sobjects/Account/{rid}")
    assert deleted.status_code == 204
    gone = await client.get(f"{V}/sobjects/Account/{rid}")
    assert gone.status_code == 404
    assert only_error(gone) == {
        "message": "The requested resource does not exist",
        "errorCode": "NOT_FOUND",
    }


async def test_write_errors_are_salesforce_arrays(client: httpx.AsyncClient) -> None:
    missing = await client.post(f"{V}/sobjects/Contact", json={"FirstName": "No"})
    assert missing.status_code == 400
    assert only_error(missing) == {
        "message": "Required fields are missing: [LastName]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["LastName"],
    }
    unknown = await client.post(f"{V}/sobjects/Account", json={"Name": "x", "Foo__c": 1})
    assert unknown.status_code == 400
    assert only_error(unknown)["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Foo__c'" in only_error(unknown)["message"]
    broken = await client.post(
        f"{V}/sobjects/Account", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert only_error(broken)["errorCode"] == "JSON_PARSER_ERROR"


async def test_maintenance_refuses_writes_and_serves_reads(
    client: httpx.AsyncClient, org: Org
) -> None:
    rid = next(iter(org.records.rows("Account")))["Id"]
    org.read_only = True
    org.maintenance_status_code = 503
    for method, path, body in [
        ("POST", f"{V}/sobjects/Account", {"Name": "x"}),
        ("PATCH", f"{V}/sobjects/Account/{rid}", {"Name": "x"}),
        ("DELETE", f"{V}/sobjects/Account/{rid}", None),
        ("POST", f"{V}/composite/sobjects", {"records": []}),
        ("POST", f"{V}/jobs/ingest", {"object": "Account", "operation": "insert"}),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status_code == 503, (method, path)
        assert only_error(response) == {
            "message": rest.MAINTENANCE_MESSAGE,
            "errorCode": MAINTENANCE,
        }
    org.maintenance_status_code = 400
    response = await client.post(f"{V}/sobjects/Account", json={"Name": "x"})
    assert response.status_code == 400
    assert only_error(response)["errorCode"] == MAINTENANCE
    assert (await client.get(f"{V}/sobjects/Account/{rid}")).status_code == 200
    query = await client.get(f"{V}/query", params={"q": "SELECT Id FROM Account"})
    assert query.status_code == 200
    assert query.json()["totalSize"] == 30
    composite = await client.post(
        f"{V}/composite",
        json={
            "compositeRequest": [
                {"method": "GET", "url": f"{V}/sobjects/Account/{rid}", "referenceId": "r"},
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Account",
                    "referenceId": "w",
                    "body": {"Name": "x"},
                },
            ]
        },
    )
    statuses = [r["httpStatusCode"] for r in composite.json()["compositeResponse"]]
    assert statuses == [200, 400]
    org.read_only = False
    assert (await client.post(f"{V}/sobjects/Account", json={"Name": "x"})).status_code == 201


async def test_query_paginates_in_2000_row_batches(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    response = await client.get(f"{V}/query/", params={"q": "SELECT Id, Name FROM Contact"})
    page = response.json()
    assert page["totalSize"] == SEED_CONTACTS
    assert page["done"] is False
    assert len(page["records"]) == 2000
    assert re.fullmatch(rf"{V}/query/01g\w{{15}}-2000", page["nextRecordsUrl"])
    seen += [r["Id"] for r in page["records"]]
    for _ in range(5):  # bounded: the seed has two batches
        if page["done"]:
            break
        page = (await client.get(page["nextRecordsUrl"])).json()
        seen += [r["Id"] for r in page["records"]]
    assert page["done"] is True
    assert "nextRecordsUrl" not in page
    assert len(seen) == len(set(seen)) == SEED_CONTACTS
    first = page["records"][0]
    assert first["attributes"]["type"] == "Contact"
    assert list(first) == ["attributes", "Id", "Name"]


async def test_query_batch_size_header_and_bad_locator(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"{V}/query",
        params={"q": "SELECT Id FROM Contact LIMIT 450"},
        headers={"Sforce-Query-Options": "batchSize=200"},
    )
    page = response.json()
    assert len(page["records"]) == 200
    assert page["totalSize"] == 450
    assert page["nextRecordsUrl"].endswith("-200")
    second = (await client.get(page["nextRecordsUrl"])).json()
    assert second["nextRecordsUrl"].endswith("-400")
    # One locator serves every page of the query.
    assert second["nextRecordsUrl"].split("-")[0] == page["nextRecordsUrl"].split("-")[0]
    third = (await client.get(second["nextRecordsUrl"])).json()
    assert len(third["records"]) == 50
    assert third["done"] is True
    bad = await client.get(f"{V}/query/01g000000000000AAA-2000")
    assert bad.status_code == 400
    assert only_error(bad)["errorCode"] == "INVALID_QUERY_LOCATOR"


async def test_query_errors_and_count(client: httpx.AsyncClient) -> None:
    bad = await client.get(f"{V}/query", params={"q": "SELECT Id FROM Account WHERE"})
    assert bad.status_code == 400
    assert only_error(bad)["errorCode"] == "MALFORMED_QUERY"
    field_ = await client.get(f"{V}/query", params={"q": "SELECT Foo FROM Account"})
    assert only_error(field_)["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Foo' on entity 'Account'" in only_error(field_)["message"]
    type_ = await client.get(f"{V}/query", params={"q": "SELECT Id FROM Foo"})
    assert only_error(type_)["errorCode"] == "INVALID_TYPE"
    assert "sObject type 'Foo' is not supported." in only_error(type_)["message"]
    count = (await client.get(f"{V}/query", params={"q": "SELECT COUNT() FROM Account"})).json()
    assert count == {"totalSize": 30, "done": True, "records": []}
    grouped = (
        await client.get(
            f"{V}/query",
            params={"q": "SELECT Industry, COUNT(Id) n FROM Account GROUP BY Industry"},
        )
    ).json()
    assert grouped["done"] is True
    assert grouped["totalSize"] == len(grouped["records"]) > 1
    assert sum(r["n"] for r in grouped["records"]) == 30
    assert grouped["records"][0]["attributes"] == {"type": "AggregateResult"}


async def test_query_all_returns_deleted_rows(client: httpx.AsyncClient, org: Org) -> None:
    rid = next(iter(org.records.rows("Account")))["Id"]
    assert (await client.delete(f"{V}/sobjects/Account/{rid}")).status_code == 204
    q = {"q": f"SELECT Id, IsDeleted FROM Account WHERE Id = '{rid}'"}
    assert (await client.get(f"{V}/query", params=q)).json()["totalSize"] == 0
    rows = (await client.get(f"{V}/queryAll", params=q)).json()["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(rid, True)]


async def test_composite_references_and_all_or_none_rollback(
    client: httpx.AsyncClient, org: Org
) -> None:
    ok = await client.post(
        f"{V}/composite",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Account",
                    "referenceId": "acct",
                    "body": {"Name": "Ref Corp"},
                },
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Contact",
                    "referenceId": "ct",
                    "body": {"LastName": "Ref", "AccountId": "@{acct.id}"},
                },
                {
                    "method": "GET",
                    "url": f"{V}/sobjects/Contact/@{{ct.id}}?fields=AccountId",
                    "referenceId": "read",
                },
            ],
        },
    )
    assert ok.status_code == 200
    parts = ok.json()["compositeResponse"]
    assert [p["httpStatusCode"] for p in parts] == [201, 201, 200]
    assert parts[2]["body"]["AccountId"] == parts[0]["body"]["id"]
    assert parts[0]["httpHeaders"]["Location"].endswith(parts[0]["body"]["id"])

    before = org.records.count("Account")
    failed = await client.post(
        f"{V}/composite",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Account",
                    "referenceId": "a1",
                    "body": {"Name": "Rolled Back"},
                },
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Contact",
                    "referenceId": "c1",
                    "body": {"FirstName": "no last name"},
                },
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Account",
                    "referenceId": "a2",
                    "body": {"Name": "Never"},
                },
            ],
        },
    )
    parts = failed.json()["compositeResponse"]
    assert [p["httpStatusCode"] for p in parts] == [400, 400, 400]
    assert parts[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert parts[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert [p["referenceId"] for p in parts] == ["a1", "c1", "a2"]
    assert org.records.count("Account") == before


async def test_composite_sobjects_collections(client: httpx.AsyncClient, org: Org) -> None:
    created = (
        await client.post(
            f"{V}/composite/sobjects",
            json={
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Account"}, "Name": "C1"},
                    {"attributes": {"type": "Account"}},
                ],
            },
        )
    ).json()
    assert created[0]["success"] is True
    assert created[1]["success"] is False
    assert created[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    rid = created[0]["id"]
    fetched = (
        await client.get(f"{V}/composite/sobjects/Account", params={"ids": rid, "fields": "Name"})
    ).json()
    assert fetched[0]["Name"] == "C1"
    org.read_only = True  # a POST retrieve is a read: allowed in maintenance
    posted = await client.post(
        f"{V}/composite/sobjects/Account",
        json={"ids": [rid, "001000000000000AAA"], "fields": ["Id", "Name"]},
    )
    org.read_only = False
    assert posted.status_code == 200
    assert [r and r["Name"] for r in posted.json()] == ["C1", None]
    deleted = (await client.delete(f"{V}/composite/sobjects", params={"ids": rid})).json()
    assert deleted == [{"id": rid, "success": True, "errors": []}]
    assert org.records.get("Account", rid) is None


# -- end to end, through the running emulator (auth, metering, real sockets) --------------


async def test_data_api_through_the_running_emulator() -> None:
    from emu_helpers import password_grant

    from tokenkeep.emulator import Emulator

    async with Emulator.running(orgs=1, seed=5) as emu, httpx.AsyncClient(timeout=10) as http:
        org = emu.orgs[0]
        grant = await password_grant(http, emu, org.users[0])
        base = grant["instance_url"] + V
        auth = {"Authorization": f"Bearer {grant['access_token']}"}

        versions = await http.get(grant["instance_url"] + "/services/data/")
        assert versions.json()[-1]["version"] == "62.0"
        assert "Sforce-Limit-Info" not in versions.headers

        limits = await http.get(f"{base}/limits", headers=auth)
        used = limits.json()["DailyApiRequests"]
        assert used["Max"] - used["Remaining"] == org.api_usage
        assert limits.headers["Sforce-Limit-Info"] == f"api-usage={org.api_usage}/{used['Max']}"

        page = (
            await http.get(f"{base}/query", params={"q": "SELECT Id FROM Contact"}, headers=auth)
        ).json()
        rest_of = (
            await http.get(grant["instance_url"] + page["nextRecordsUrl"], headers=auth)
        ).json()
        assert len(page["records"]) + len(rest_of["records"]) == SEED_CONTACTS
        assert rest_of["done"] is True

        created = await http.post(
            f"{base}/sobjects/Lead", json={"LastName": "E2E", "Company": "T"}, headers=auth
        )
        assert created.status_code == 201
        lead_id = created.json()["id"]
        assert lead_id.startswith("00Q")

        emu.admin.patch_org(org.org_id, {"read_only": True, "maintenance_status_code": 503})
        refused = await http.patch(
            f"{base}/sobjects/Lead/{lead_id}", json={"Status": "Working - Contacted"}, headers=auth
        )
        assert refused.status_code == 503
        assert refused.json() == [{"message": rest.MAINTENANCE_MESSAGE, "errorCode": MAINTENANCE}]
        read = await http.get(f"{base}/sobjects/Lead/{lead_id}", headers=auth)
        assert read.status_code == 200
        assert read.json()["Status"] == "Open - Not Contacted"


async def test_the_calling_user_is_a_user_record_and_authors_writes(
    client: httpx.AsyncClient,
) -> None:
    q = "SELECT Id, Username, IsActive FROM User WHERE Username = 'ann@acme.test'"
    users = (await client.get(f"{V}/query", params={"q": q})).json()["records"]
    assert [(u["Id"], u["IsActive"]) for u in users] == [("0055g0000000001AAA", True)]
    created = (await client.post(f"{V}/sobjects/Account", json={"Name": "Mine"})).json()
    q = f"SELECT OwnerId, CreatedById, Owner.Username FROM Account WHERE Id = '{created['id']}'"
    (row,) = (await client.get(f"{V}/query", params={"q": q})).json()["records"]
    assert row["OwnerId"] == row["CreatedById"] == "0055g0000000001AAA"
    assert row["Owner"]["Username"] == "ann@acme.test"
    seeded = (
        await client.get(f"{V}/query", params={"q": "SELECT Owner.Name FROM Contact LIMIT 1"})
    ).json()
    assert seeded["records"][0]["Owner"]["Name"] == "Emulator Owner"


async def test_replication_updated_and_deleted(client: httpx.AsyncClient, org: Org) -> None:
    # The harness's clock stands at 2026-01-01T00:00:00Z; seed data is from 2025.
    created = (await client.post(f"{V}/sobjects/Account", json={"Name": "Fresh"})).json()["id"]
    gone = next(iter(org.records.rows("Account")))["Id"]
    assert (await client.delete(f"{V}/sobjects/Account/{gone}")).status_code == 204
    window = {"start": "2025-12-31T00:00:00+00:00", "end": "2026-01-02T00:00:00Z"}
    updated = (await client.get(f"{V}/sobjects/Account/updated/", params=window)).json()
    assert updated == {"ids": [created], "latestDateCovered": "2026-01-02T00:00:00.000+0000"}
    deleted = (await client.get(f"{V}/sobjects/Account/deleted/", params=window)).json()
    assert deleted["deletedRecords"] == [
        {"id": gone, "deletedDate": "2026-01-01T00:00:00.000+0000"}
    ]
    bad = await client.get(f"{V}/sobjects/Account/updated/", params={"start": "soon"})
    assert bad.status_code == 400
    assert only_error(bad)["errorCode"] == "INVALID_REPLICATION_DATE"


async def test_gzip_json_body(client: httpx.AsyncClient) -> None:
    import gzip

    created = await client.post(
        f"{V}/sobjects/Account",
        content=gzip.compress(b'{"Name": "Zipped"}'),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert created.status_code == 201
    got = (await client.get(f"{V}/sobjects/Account/{created.json()['id']}")).json()
    assert got["Name"] == "Zipped"
