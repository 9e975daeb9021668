"""Salesforce parsing: token answers, signature, id URL, identity, introspection, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tokenkeep.providers.errors import MalformedAnswerError, SignatureMismatchError
from tokenkeep.providers.salesforce import (
    compute_signature,
    normalize_id,
    parse_id_url,
    parse_identity,
    parse_introspection,
    parse_oauth_error,
    parse_rest_errors,
    parse_token_response,
    verify_signature,
)
from tokenkeep.secret import Secret

SECRET = "8C2E6F0A1B3D5E7F9A1C3E5F7A9B1D3F"
ID_URL = "https://login.salesforce.com/id/00D5g000004XXXXEAA/0055g00000AAAAAAA2"
ACCESS = "00D5g000004XXXX!AQ8AQHcanaryAccessToken.abcdefghijk"
REFRESH = "5Aep861canaryRefreshToken.abcdefghijk"


def signed_body(secret: str = SECRET, **extra: object) -> dict[str, object]:
    issued_at = "1589009375588"
    sig = base64.b64encode(
        hmac.new(secret.encode(), (ID_URL + issued_at).encode(), hashlib.sha256).digest()
    ).decode()
    body: dict[str, object] = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "instance_url": "https://acme.my.salesforce.com/",
        "id": ID_URL,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": sig,
        "scope": "api refresh_token",
    }
    body.update(extra)
    return body


def test_signature_matches_the_documented_recipe() -> None:
    body = signed_body()
    assert compute_signature(SECRET, ID_URL, "1589009375588") == body["signature"]
    assert verify_signature(SECRET, ID_URL, "1589009375588", str(body["signature"]))


@pytest.mark.parametrize(
    ("secret", "id_url", "issued_at"),
    [
        ("wrong-secret", ID_URL, "1589009375588"),
        (SECRET, ID_URL.replace("AAAAAAA2", "AAAAAAA3"), "1589009375588"),
        (SECRET, ID_URL, "1589009375589"),
    ],
)
def test_signature_mismatch(secret: str, id_url: str, issued_at: str) -> None:
    good = str(signed_body()["signature"])
    assert not verify_signature(secret, id_url, issued_at, good)


def test_parse_token_response() -> None:
    tr = parse_token_response(signed_body(), received_at=1000.0, client_secret=Secret(SECRET))
    assert tr.access_token.reveal() == ACCESS
    assert tr.refresh_token is not None
    assert tr.refresh_token.reveal() == REFRESH
    assert tr.instance_url == "https://acme.my.salesforce.com"
    assert tr.id_url == ID_URL
    assert tr.org_id == "00D5g000004XXXXEAA"
    assert tr.user_id == "0055g00000AAAAAAA2"
    assert tr.issued_at_ms == 1589009375588
    assert tr.signature_verified is True
    assert tr.scopes == ("api", "refresh_token")
    assert tr.received_at == 1000.0
    # raw keeps the non-secret fields for display, never a credential.
    assert "access_token" not in tr.raw
    assert "refresh_token" not in tr.raw
    assert tr.raw["issued_at"] == "1589009375588"


def test_tokens_never_in_repr() -> None:
    body = signed_body()
    tr = parse_token_response(body, received_at=1.0, client_secret=Secret(SECRET))
    text = repr(tr) + str(tr)
    assert "canary" not in text
    assert str(body["signature"]) not in text


def test_bad_signature_raises() -> None:
    body = signed_body(secret="someone-else")
    with pytest.raises(SignatureMismatchError) as info:
        parse_token_response(body, received_at=1.0, client_secret=Secret(SECRET))
    assert info.value.code == "invalid_signature"
    assert "canary" not in str(info.value) + repr(info.value)


def test_no_secret_or_no_signature_means_unverified_not_failed() -> None:
    tr = parse_token_response(signed_body(), received_at=1.0, client_secret=None)
    assert tr.signature_verified is False
    body = signed_body()
    del body["signature"]
    del body["issued_at"]
    tr = parse_token_response(body, received_at=1.0, client_secret=Secret(SECRET))
    assert tr.signature_verified is False
    assert tr.issued_at_ms is None


def test_refresh_answer_without_rotation_has_no_refresh_token() -> None:
    body = signed_body()
    del body["refresh_token"]
    tr = parse_token_response(body, received_at=1.0, client_secret=Secret(SECRET))
    assert tr.refresh_token is None


@pytest.mark.parametrize("missing", ["access_token", "instance_url"])
def test_broken_success_is_a_malformed_answer(missing: str) -> None:
    body = signed_body()
    del body[missing]
    with pytest.raises(MalformedAnswerError) as info:
        parse_token_response(body, received_at=1.0, endpoint="token")
    assert info.value.code == "bad_response"
    assert (info.value.status, info.value.endpoint) == (200, "token")


def test_issued_at_as_number_or_garbage() -> None:
    assert parse_token_response(signed_body(issued_at=1589009375588, signature=None),
                                received_at=1.0).issued_at_ms == 1589009375588  # fmt: skip
    assert parse_token_response(signed_body(issued_at="soon", signature=None),
                                received_at=1.0).issued_at_ms is None  # fmt: skip


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (ID_URL, ("00D5g000004XXXXEAA", "0055g00000AAAAAAA2")),
        ("http://127.0.0.1:8500/id/00D5g000004XXXXEAA/0055g00000AAAAAAA2",
         ("00D5g000004XXXXEAA", "0055g00000AAAAAAA2")),
        ("https://login.salesforce.com/id/00D5g000004XXXX/0055g00000AAAAA",
         ("00D5g000004XXXXEA4", "0055g00000AAAAAAA5")),
        ("https://login.salesforce.com/services/oauth2/userinfo", None),
        ("https://login.salesforce.com/id/00D!bad/005x", None),
    ],
)  # fmt: skip
def test_parse_id_url(url: str, expected: tuple[str, str] | None) -> None:
    assert parse_id_url(url) == expected


def test_normalize_id_known_values() -> None:
    # Checksum suffixes from Salesforce's documented examples.
    assert normalize_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert normalize_id("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"
    with pytest.raises(ValueError):
        normalize_id("abc")


def test_parse_identity_from_id_url_and_userinfo_shapes() -> None:
    ident = parse_identity(
        {
            "user_id": "0055g00000AAAAAAA2",
            "organization_id": "00D5g000004XXXXEAA",
            "username": "ann@acme.com",
            "email": "ann@acme.com",
            "display_name": "Ann",
            "active": True,
            "user_type": "STANDARD",
            "urls": {"rest": "https://acme.my.salesforce.com/services/data/v{version}/"},
        }
    )
    assert (ident.user_id, ident.org_id, ident.username) == (
        "0055g00000AAAAAAA2", "00D5g000004XXXXEAA", "ann@acme.com",
    )  # fmt: skip
    assert ident.urls["rest"].endswith("/v{version}/")
    assert ident.active is True
    info = parse_identity({"preferred_username": "bob@acme.com", "name": "Bob"}, id_url=ID_URL)
    assert (info.username, info.display_name, info.org_id) == (
        "bob@acme.com", "Bob", "00D5g000004XXXXEAA",
    )  # fmt: skip
    with pytest.raises(MalformedAnswerError):
        parse_identity({"username": "x"})


def test_parse_introspection() -> None:
    active = parse_introspection(
        {"active": True, "scope": "api refresh_token", "client_id": "3MVG9", "username": "ann",
         "sub": ID_URL, "token_type": "access_token", "exp": 1676058616, "iat": 1676051416,
         "nbf": 1676051416}
    )  # fmt: skip
    assert active.active
    assert active.lifetime_seconds == 7200.0
    assert not parse_introspection({"active": False}).active
    assert parse_introspection({"active": True}).lifetime_seconds is None
    assert parse_introspection({"active": True, "exp": 5, "iat": 10}).lifetime_seconds is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"error":"invalid_grant","error_description":"expired access/refresh token"}',
         ("invalid_grant", "expired access/refresh token")),
        (400, b'{"error_description":"client identifier invalid","error":"invalid_client_id"}',
         ("invalid_client_id", "client identifier invalid")),
        (400, b'{"error":"invalid_token"}', ("invalid_token", None)),
        (403, b"Bad_OAuth_Token", ("Bad_OAuth_Token", None)),
        (403, b"Bad_OAuth_Token\r\n", ("Bad_OAuth_Token", None)),
        (401, b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]',
         ("INVALID_SESSION_ID", "Session expired or invalid")),
        (404, b"<html><body>Not here 00D5g000004XXXX!AQ8secret</body></html>",
         ("http_404", None)),
        (400, b"{not json", ("http_400", None)),
        (400, b"", ("http_400", None)),
        # An empty or blank "error" is no error name (found by test_parser_fuzz.py).
        (100, b'{"access_token": "x", "error": ""}', ("http_100", None)),
        (400, b'{"error": "  ", "error_description": "d"}', ("http_400", None)),
        (400, b'{"error": " invalid_grant "}', ("invalid_grant", None)),
    ],
)  # fmt: skip
def test_parse_oauth_error(status: int, body: bytes, expected: tuple[str, str | None]) -> None:
    assert parse_oauth_error(status, body) == expected


def test_parse_rest_errors_is_defensive() -> None:
    errs = parse_rest_errors(
        b'[{"fields":["Name"],"errorCode":"REQUIRED_FIELD_MISSING","message":"Required"},'
        b'{"message":"x"}, 7, {"errorCode":"OTHER"}]'
    )
    assert [(e.error_code, e.message, e.fields) for e in errs] == [
        ("REQUIRED_FIELD_MISSING", "Required", ("Name",)),
        ("OTHER", "", ()),
    ]
    assert parse_rest_errors(b'{"errorCode":"SINGLE","message":"m"}')[0].error_code == "SINGLE"
    assert parse_rest_errors(b"<html>") == []
    assert parse_rest_errors(b"\xff\xfe") == []
    assert parse_rest_errors(b'"text"') == []


def test_bad_signature_on_a_refresh_answer_keeps_the_tokens_and_flags_it() -> None:
    body = signed_body(secret="someone-else")
    tr = parse_token_response(
        body, received_at=1.0, client_secret=Secret(SECRET), strict_signature=False
    )
    assert tr.signature_mismatch is True
    assert tr.signature_verified is False
    assert tr.refresh_token is not None
    good = parse_token_response(signed_body(), received_at=1.0, client_secret=Secret(SECRET))
    assert good.signature_mismatch is False
