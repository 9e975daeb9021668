"""Bulk API 2.0 ingest: job life cycle, CSV parsing across chunk boundaries, big uploads
streamed without buffering (over a real uvicorn socket)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import re
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenkeep.clock import ManualClock
from tokenkeep.emulator import rest
from tokenkeep.emulator.bulk import MAX_MATERIALIZED_ROWS
from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.records import OrgRecords

ORG = "00D5g000004XXXXEAA"
V = "/services/data/v60.0"


def data_app(store: OrgRecords, flags: dict[str, bool]) -> Starlette:
    """A stand-in for the emulator core: builds the context and awaits rest.handle."""
    clock = ManualClock()

    async def endpoint(request: Request) -> Response:
        m = re.fullmatch(r"/services/data/v([^/]+)(/.*)?", request.url.path)
        assert m is not None
        ctx = RestContext(
            ORG,
            ORG[:15],
            "http://testserver",
            m.group(1),
            m.group(2) or "",
            "0055g0000000001AAA",
            "ann@acme.test",
            flags.get("read_only", False),
            503,
            store,
            clock,
            1,
            15000,
        )
        return await rest.handle(request, ctx)

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


@pytest.fixture
def store() -> OrgRecords:
    return OrgRecords(ORG, None, ManualClock())


@pytest.fixture
async def client(store: OrgRecords) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=data_app(store, {}))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def create_job(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    body = {"object": "Account", "operation": "insert", "contentType": "CSV", **extra}
    response = await client.post(f"{V}/jobs/ingest", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


CSV_BODY = (
    b"Name,Description,NumberOfEmployees\n"
    b"Plain Co,simple,10\n"
    b'"Quoted, Inc","line one\nline two ""quoted""",20\n'
    b",missing name,30\n"
    b"Last Co,,\n"
)


@pytest.mark.parametrize("chunk_size", [7, 64 * 1024])
async def test_insert_job_life_cycle(
    client: httpx.AsyncClient, store: OrgRecords, chunk_size: int
) -> None:
    job = await create_job(client, lineEnding="LF")
    assert job["state"] == "Open"
    assert job["id"].startswith("750")
    assert job["contentUrl"] == f"services/data/v60.0/jobs/ingest/{job['id']}/batches"
    base = f"{V}/jobs/ingest/{job['id']}"
    # Tiny chunks cut through the quoted, multi-line field: records must survive intact.
    upload = await client.put(
        f"{base}/batches",
        content=chunked(CSV_BODY, chunk_size),
        headers={"Content-Type": "text/csv"},
    )
    assert upload.status_code == 201
    assert upload.content == b""
    closed = await client.patch(base, json={"state": "UploadComplete"})
    assert closed.status_code == 200
    assert closed.json()["state"] == "UploadComplete"
    status = (await client.get(base)).json()
    assert status["state"] == "JobComplete"
    assert status["numberRecordsProcessed"] == 4
    assert status["numberRecordsFailed"] == 1
    quoted = next(r for r in store.rows("Account") if r["Name"] == "Quoted, Inc")
    assert quoted["Description"] == 'line one\nline two "quoted"'
    assert quoted["NumberOfEmployees"] == 20
    assert store.count("Account") == 3

    ok = parse_csv((await client.get(f"{base}/successfulResults")).text)
    assert [r["Name"] for r in ok] == ["Plain Co", "Quoted, Inc", "Last Co"]
    assert all(r["sf__Created"] == "true" for r in ok)
    assert {r["sf__Id"] for r in ok} == {r["Id"] for r in store.rows("Account")}
    failed = parse_csv((await client.get(f"{base}/failedResults")).text)
    assert len(failed) == 1
    assert failed[0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")
    assert failed[0]["Description"] == "missing name"

    assert (await client.delete(base)).status_code == 204
    assert (await client.get(base)).status_code == 404


async def test_update_and_delete_jobs(client: httpx.AsyncClient, store: OrgRecords) -> None:
    first = store.create("Account", {"Name": "Before"})["Id"]
    second = store.create("Account", {"Name": "Other"})["Id"]
    job = await create_job(client, operation="update")
    base = f"{V}/jobs/ingest/{job['id']}"
    await client.put(f"{base}/batches", content=f"Id,Name\n{first},After\n".encode())
    await client.patch(base, json={"state": "UploadComplete"})
    assert (await client.get(base)).json()["numberRecordsFailed"] == 0
    record = store.get("Account", first)
    assert record is not None
    assert record["Name"] == "After"
    job = await create_job(client, operation="delete")
    base = f"{V}/jobs/ingest/{job['id']}"
    await client.put(f"{base}/batches", content=f"Id\n{second}\n".encode())
    await client.patch(base, json={"state": "UploadComplete"})
    assert store.get("Account", second) is None


async def test_job_errors(client: httpx.AsyncClient) -> None:
    bad = await client.post(f"{V}/jobs/ingest", json={"object": "Nope", "operation": "insert"})
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALIDJOB"
    job = await create_job(client)
    base = f"{V}/jobs/ingest/{job['id']}"
    await client.put(f"{base}/batches", content=b"Name,Bogus__c\nx,y\n")
    await client.patch(base, json={"state": "UploadComplete"})
    status = (await client.get(base)).json()
    assert status["state"] == "Failed"
    assert status["errorMessage"] == "InvalidBatch : Field name not found : Bogus__c"
    late = await client.put(f"{base}/batches", content=b"Name\nx\n")
    assert late.status_code == 409


async def test_maintenance_refuses_job_creation_but_not_status(store: OrgRecords) -> None:
    flags = {"read_only": False}
    transport = httpx.ASGITransport(app=data_app(store, flags))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        job = await create_job(c)
        flags["read_only"] = True
        refused = await c.post(
            f"{V}/jobs/ingest", json={"object": "Account", "operation": "insert"}
        )
        assert refused.status_code == 503
        assert (
            refused.json()[0]["errorCode"] == "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
        )
        upload = await c.put(f"{V}/jobs/ingest/{job['id']}/batches", content=b"Name\nx\n")
        assert upload.status_code == 503
        assert (await c.get(f"{V}/jobs/ingest/{job['id']}")).status_code == 200


HEADER = b"Name,Description,NumberOfEmployees\n"


def csv_block() -> bytes:
    """100 rows; the first has a quoted field holding a comma and a newline."""
    filler = "x" * 60
    lines = ['"Row, 0","multi\nline ' + filler + '",0\n']
    lines += [f"Row {i},{filler},{i}\n" for i in range(1, 100)]
    return "".join(lines).encode()


async def stream_blocks(blocks: int, per_chunk: int = 10) -> AsyncIterator[bytes]:
    chunk = csv_block() * per_chunk
    yield HEADER
    for _ in range(blocks // per_chunk):
        yield chunk


async def test_big_upload_streams_through_the_emulator_without_buffering() -> None:
    """20 MB through the running emulator (auth, metering, uvicorn): never held whole."""
    from emu_helpers import password_grant

    from tokenkeep.emulator import Emulator

    blocks = 3000
    rows = blocks * 100  # ~20 MB of CSV
    async with Emulator.running(orgs=1, seed=9) as emu, httpx.AsyncClient(timeout=120) as c:
        store = emu.orgs[0].records
        before = store.count("Account")
        grant = await password_grant(c, emu, emu.orgs[0].users[0])
        c.headers["Authorization"] = f"Bearer {grant['access_token']}"
        c.base_url = httpx.URL(grant["instance_url"])
        job = await create_job(c)
        base = f"{V}/jobs/ingest/{job['id']}"
        tracemalloc.start()
        try:
            upload = await c.put(f"{base}/batches", content=stream_blocks(blocks))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert upload.status_code == 201
        size = len(HEADER) + blocks * len(csv_block())
        assert size > 20_000_000
        # The peak (which includes the first MAX_MATERIALIZED_ROWS rows kept for
        # processing) stays far below the body's size.
        assert peak < size / 3, (peak, size)
        await c.patch(base, json={"state": "UploadComplete"})
        status = (await c.get(base)).json()
        assert status["state"] == "JobComplete"
        assert status["numberRecordsProcessed"] == rows
        assert status["numberRecordsFailed"] == 0
        assert store.count("Account") == before + MAX_MATERIALIZED_ROWS
        quoted = next(r for r in store.rows("Account") if r["Name"] == "Row, 0")
        assert quoted["Description"].startswith("multi\nline ")


async def test_simple_salesforce_bulk2_insert_through_the_emulator() -> None:
    """Unmodified simple-salesforce Bulk 2.0 client: create, upload, close, poll, results."""
    import requests
    from emu_helpers import password_grant
    from simple_salesforce import Salesforce

    from tokenkeep.emulator import Emulator

    async with Emulator.running(orgs=1, seed=3, tls=True) as emu:
        org = emu.orgs[0]
        async with httpx.AsyncClient(verify=str(emu.ca_file), timeout=10) as http:
            grant = await password_grant(http, emu, org.users[0])
        session = requests.Session()
        session.verify = str(emu.ca_file)
        session.trust_env = False
        sf = Salesforce(
            instance_url=grant["instance_url"], session_id=grant["access_token"], session=session
        )
        before = org.records.count("Account")
        records = [{"Name": "Bulk One", "Industry": "Energy"}, {"Name": "", "Industry": "Retail"}]

        def load() -> tuple[list[dict[str, int]], list[dict[str, str]]]:
            results = sf.bulk2.Account.insert(records=records, wait=0.05)
            job_id = results[0]["job_id"]
            failed = sf.bulk2.Account.get_failed_records(job_id)
            return results, list(csv.DictReader(io.StringIO(failed)))

        try:
            results, failed = await asyncio.to_thread(load)
        finally:
            session.close()
        assert results[0]["numberRecordsProcessed"] == 2
        assert results[0]["numberRecordsFailed"] == 1
        assert [row["Industry"] for row in failed] == ["Retail"]
        assert org.records.count("Account") == before + 1


async def test_gzip_upload_is_inflated_while_streaming(
    client: httpx.AsyncClient, store: OrgRecords
) -> None:
    job = await create_job(client)
    base = f"{V}/jobs/ingest/{job['id']}"
    body = gzip.compress(HEADER + csv_block() * 3)
    upload = await client.put(
        f"{base}/batches",
        content=chunked(body, 1000),
        headers={"Content-Encoding": "gzip", "Content-Type": "text/csv"},
    )
    assert upload.status_code == 201
    await client.patch(base, json={"state": "UploadComplete"})
    assert (await client.get(base)).json()["numberRecordsProcessed"] == 300
    assert store.count("Account") == 300
    job = await create_job(client)
    broken = await client.put(
        f"{V}/jobs/ingest/{job['id']}/batches",
        content=body[:-20],
        headers={"Content-Encoding": "gzip"},
    )
    assert broken.status_code == 400
    assert broken.json()[0]["errorCode"] == "INVALIDBATCH"
