"""The redaction processor: secret names and secret-looking values never reach a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from tokenkeep.observability.logging import REDACTED, configure_logging, get_logger, redact
from tokenkeep.secret import Secret

SF_TOKEN = "00D5g000004ABCD!AQ0AQFakeSessionTokenValue.abc_def"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
API_KEY = "tk_abcdefghijklmnop0123456789"


@pytest.fixture
def log_stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


@pytest.mark.parametrize(
    "name",
    [
        "access_token",
        "refresh_token",
        "client_secret",
        "password",
        "assertion",
        "Authorization",
        "cookie",
        "api_key",
        "private_key",
        "code",
        "code_verifier",
    ],
)
def test_secret_names_are_masked(name: str) -> None:
    assert redact({name: "plain-looking-value"}) == {name: REDACTED}


def test_safe_names_and_non_secrets_pass_through() -> None:
    event = {
        "has_refresh_token": True,
        "refresh_token_fingerprint": "sha256:0123456789abcdef",
        "grant_type": "refresh_token",
        "token_type": "Bearer",
        "connection_id": "conn-1",
        "status": 200,
    }
    assert redact(event) == event


@pytest.mark.parametrize(
    "value",
    [
        f"got {SF_TOKEN} from the org",
        f"Authorization: Bearer {SF_TOKEN}",
        f"assertion={JWT}",
        f"key {API_KEY} used",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
    ],
)
def test_secret_looking_values_are_masked_under_any_name(value: str) -> None:
    out = redact({"detail": value})["detail"]
    assert REDACTED in out
    for secret in (SF_TOKEN, JWT, API_KEY, "BEGIN RSA PRIVATE KEY"):
        assert secret not in out


def test_nested_structures_are_masked() -> None:
    event = {
        "response": {
            "body": {"access_token": "x" * 20, "instance_url": "https://na1.example"},
            "items": [{"refresh_token": "y" * 20}, f"note {SF_TOKEN}"],
        },
        "headers": (("Authorization", f"Bearer {SF_TOKEN}"),),
    }
    out = redact(event)
    assert out["response"]["body"] == {
        "access_token": REDACTED,
        "instance_url": "https://na1.example",
    }
    assert out["response"]["items"][0] == {"refresh_token": REDACTED}
    assert SF_TOKEN not in json.dumps(out)


def test_secret_objects_are_masked() -> None:
    assert redact({"value": Secret("hunter2")}) == {"value": REDACTED}


def test_log_lines_never_carry_a_token(log_stream: io.StringIO) -> None:
    log = get_logger("test")
    log.info("refreshed", access_token=SF_TOKEN, note=f"token {SF_TOKEN}", org_id="00D5g000004ABCD")
    line = json.loads(log_stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "refreshed"
    assert line["access_token"] == REDACTED
    assert line["org_id"] == "00D5g000004ABCD"
    assert SF_TOKEN not in log_stream.getvalue()


def test_exception_tracebacks_are_masked(log_stream: io.StringIO) -> None:
    log = get_logger("test")
    try:
        raise RuntimeError(f"upstream said no to {SF_TOKEN}")
    except RuntimeError:
        log.exception("call failed")
    text = log_stream.getvalue()
    assert "RuntimeError" in text
    assert SF_TOKEN not in text


def test_standard_library_loggers_are_masked(log_stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("header was Bearer %s", SF_TOKEN)
    text = log_stream.getvalue()
    assert "header was" in text
    assert SF_TOKEN not in text


def test_log_level_filters(log_stream: io.StringIO) -> None:
    configure_logging("json", "WARNING", stream=log_stream)
    get_logger("test").info("quiet")
    get_logger("test").warning("loud")
    assert "quiet" not in log_stream.getvalue()
    assert "loud" in log_stream.getvalue()


SF_REFRESH = "5Aep861TbHhJbIjZ5f_5NGxQ.lGw0.PvJmCkjVdZOoXz8J7bFXTDI2ZUmHx3kGJ3Bd0qYwzDcqpl-D9Qe"


@pytest.mark.parametrize(
    ("text", "kept", "hidden"),
    [
        (f"refresh failed for {SF_REFRESH} today", "refresh failed for", SF_REFRESH),
        (
            "grant_type=password&username=u%40x.com&password=S3cret%21pw&client_id=3MVG",
            "grant_type=password&username=u%40x.com&password=***&client_id=3MVG",
            "S3cret",
        ),
        (
            "grant_type=refresh_token&refresh_token=opaque.value&client_secret=shh123",
            "grant_type=refresh_token&refresh_token=***&client_secret=***",
            "opaque.value",
        ),
        (
            "GET /oauth/callback?code=aPrxAbC123&state=s1",
            "/oauth/callback?code=***&state=s1",
            "aPrx",
        ),
        ("#access_token=opaque1&instance_url=x", "#access_token=***&instance_url=x", "opaque1"),
        ("assertion=abc.def.ghi sent", "assertion=*** sent", "abc.def"),
        (
            "connect to postgresql+psycopg://postgres:hunter2@127.0.0.1/tk failed",
            "postgresql+psycopg://***@127.0.0.1/tk failed",
            "hunter2",
        ),
    ],
)
def test_free_text_credentials_are_masked(text: str, kept: str, hidden: str) -> None:
    out = redact({"event": text})["event"]
    assert hidden not in out
    assert kept in out


@pytest.mark.parametrize(
    "text",
    [
        "zipcode=12345&mycode=9",
        "grant_type=refresh_token",
        "https://user@host.example/path",
        "/services/data/v60.0/query?q=SELECT+Id+FROM+Account",
        "stk_abcdefghijklmnopqrstuv",
        "5Aep-short",
    ],
)
def test_look_alikes_pass_unchanged(text: str) -> None:
    assert redact({"event": text}) == {"event": text}
