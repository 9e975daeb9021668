"""Path routing and validation (src/tokenkeep/proxy/paths.py): the SSRF/smuggling corpus."""

from __future__ import annotations

import pytest
from tests.proxy.ssrf_corpus import SSRF_ATTEMPTS

from tokenkeep.proxy.paths import (
    InvalidPathError,
    MissingConnectionIdError,
    ProxyTarget,
    RouteNotFoundError,
    build_upstream_url,
    split_target,
)

INSTANCE = "https://acme.my.salesforce.com"


def test_corpus_is_large_enough() -> None:
    assert len(SSRF_ATTEMPTS) >= 40


@pytest.mark.parametrize(("raw_path", "query"), SSRF_ATTEMPTS)
def test_every_attempt_is_refused_with_invalid_path(raw_path: bytes, query: bytes) -> None:
    with pytest.raises(InvalidPathError) as info:
        split_target(raw_path, query, "conn1")
    assert info.value.status_code == 400
    assert info.value.code == "invalid_path"


@pytest.mark.parametrize(
    ("raw_path", "query", "expected_path"),
    [
        (
            b"/proxy/services/data/v60.0/query",
            b"q=SELECT+Id+FROM+Account",
            "/services/data/v60.0/query",
        ),
        (b"/proxy/services/data/v60.0/query/", b"q=SELECT%0AId", "/services/data/v60.0/query/"),
        (b"/proxy/services/data/v60.0/sobjects/Account/001xx000003DGb2AAG", b"", None),
        (b"/proxy/services/data/v60.0/sobjects/Account/Ext__c/a%20b", b"", None),
        (b"/proxy/services/data/v60.0/jobs/ingest/750xx/batches", b"", None),
        (b"/proxy/services/oauth2/userinfo", b"", None),
        (b"/proxy/services/data/v60.0/query/01gxx-2000", b"", None),
        (b"/proxy/services/data/v60.0/sobjects/Account/describe", b"", None),
        (b"/proxy/services/async/60.0/job/750xx/batch", b"", None),
        (b"/proxy/services/apexrest/my.pkg/v1", b"", None),
    ],
)
def test_salesforce_paths_pass_unchanged(
    raw_path: bytes, query: bytes, expected_path: str | None
) -> None:
    target = split_target(raw_path, query, "conn1")
    assert target.connection_id == "conn1"
    assert target.path == (expected_path or raw_path.decode()[len("/proxy") :])
    assert target.query == query


def test_direct_mode_takes_the_id_from_the_path_and_ignores_the_header() -> None:
    target = split_target(b"/c/acme-prod/services/data/v60.0/limits", b"", "other")
    assert target == ProxyTarget("acme-prod", "/services/data/v60.0/limits", b"")


def test_direct_mode_without_a_path_targets_the_root() -> None:
    assert split_target(b"/c/acme", b"", None).path == "/"


def test_proxy_mode_needs_the_connection_id_header() -> None:
    with pytest.raises(MissingConnectionIdError) as info:
        split_target(b"/proxy/services/data", b"", None)
    assert info.value.status_code == 400
    with pytest.raises(MissingConnectionIdError):
        split_target(b"/proxy/services/data", b"", "  ")
    with pytest.raises(MissingConnectionIdError):
        split_target(b"/proxy/services/data", b"", "bad id/../x")


@pytest.mark.parametrize("raw_path", [b"/", b"/proxyx/services", b"/cx/a/b", b"/services/data"])
def test_other_paths_are_not_proxy_routes(raw_path: bytes) -> None:
    with pytest.raises(RouteNotFoundError) as info:
        split_target(raw_path, b"", "conn1")
    assert info.value.status_code == 404


def test_upstream_url_is_the_stored_instance_plus_the_path_and_query() -> None:
    target = split_target(b"/c/c1/services/data/v60.0/query", b"q=SELECT+Id", None)
    assert (
        build_upstream_url(INSTANCE, target, allow_insecure_loopback=False)
        == INSTANCE + "/services/data/v60.0/query?q=SELECT+Id"
    )
    assert build_upstream_url(INSTANCE + "/", target, allow_insecure_loopback=False).startswith(
        INSTANCE + "/services/"
    )
    no_query = split_target(b"/c/c1/services/data", b"", None)
    assert (
        build_upstream_url("http://127.0.0.1:8501", no_query, allow_insecure_loopback=True)
        == "http://127.0.0.1:8501/services/data"
    )


@pytest.mark.parametrize(
    "instance_url",
    [
        "ftp://acme.example",
        "https://user:pw@acme.example",
        "https://acme.example?x=1",
        "acme.example",
    ],
)
def test_a_malformed_instance_url_is_refused(instance_url: str) -> None:
    target = split_target(b"/c/c1/services", b"", None)
    with pytest.raises(InvalidPathError):
        build_upstream_url(instance_url, target, allow_insecure_loopback=True)


@pytest.mark.parametrize(
    ("instance_url", "allow"),
    [
        ("http://acme.example", True),  # plain http to a real host: never
        ("http://acme.example", False),
        ("http://10.0.0.5:8080", True),
        ("http://127.0.0.1:8501", False),  # loopback, but the setting is off
        ("http://localhost:8501", False),
    ],
)
def test_plain_http_is_refused_unless_loopback_and_allowed(instance_url: str, allow: bool) -> None:
    target = split_target(b"/c/c1/services/data", b"", None)
    with pytest.raises(InvalidPathError) as info:
        build_upstream_url(instance_url, target, allow_insecure_loopback=allow)
    assert "https://" in info.value.message


@pytest.mark.parametrize(
    "instance_url", ["http://127.0.0.1:8501", "http://localhost:8501", "http://[::1]:8501"]
)
def test_loopback_http_passes_when_allowed(instance_url: str) -> None:
    target = split_target(b"/c/c1/services/data", b"", None)
    url = build_upstream_url(instance_url, target, allow_insecure_loopback=True)
    assert url == instance_url + "/services/data"
