"""Fuzz the parsers of what Salesforce sends: no crash but our documented errors, no secret.

Issue 13, suite item 16. Hypothesis feeds arbitrary bytes, text and JSON to the code that
reads Salesforce's answers, at the token-endpoint client's edge (the body bytes of a token,
introspection or userinfo answer go through the same JSON reading and error mapping as a
real call: ``TokenEndpointClient._json_object`` inside ``_provider_answer``) and at the
pure readers (OAuth error bodies, REST error arrays and the proxy/diagnosis answer reader,
``Sforce-Limit-Info``, ``Retry-After``). Allowed outcomes: a parsed value, or a
:class:`~tokenkeep.errors.TokenkeepError` (``UpstreamTransportError``,
``TokenSignatureError``) with a non-empty message; anything else is a crash. Secrets in the
answer (access and refresh tokens, the client secret used for the signature) never appear in
an error message or in the parsed value's repr.

Found by it (fixed): JSON ``1e999`` (infinity) or ``NaN`` as ``issued_at``/``exp`` raised
OverflowError/ValueError from ``int()``; a ``Retry-After: inf`` became an infinite backoff
that ``math.ceil`` turned into OverflowError; a ``Sforce-Limit-Info`` with a 5,000-digit
number raised ValueError (Python's int digit limit).
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokenkeep.errors import TokenkeepError
from tokenkeep.oauth.client import TokenEndpointClient, _Answer, _provider_answer
from tokenkeep.oauth.errors import UpstreamTransportError
from tokenkeep.providers import salesforce
from tokenkeep.providers.salesforce_answers import read_api_answer, retry_after_seconds
from tokenkeep.proxy.outcome import error_retry_after
from tokenkeep.secret import Secret

ACCESS = "fuzzcanaryaccess7Hq2"
REFRESH = "fuzzcanaryrefresh9Wz4"
CLIENT_SECRET = "fuzzcanarysecret3Kd8"
CANARIES = (ACCESS, REFRESH, CLIENT_SECRET)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_token_fields = {
    "access_token": st.just(ACCESS) | json_values,
    "refresh_token": st.just(REFRESH) | json_values,
    "instance_url": st.just("https://na1.salesforce.com") | json_values,
    "id": st.just("https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA")
    | st.text(max_size=80)
    | json_values,
    "issued_at": st.just("1700000000000") | json_values,
    "signature": st.text(max_size=50) | json_values,
    "scope": json_values,
    "token_type": json_values,
    "exp": json_values,
    "iat": json_values,
    "nbf": json_values,
    "active": json_values,
    "user_id": json_values,
    "organization_id": json_values,
    "urls": json_values,
    "errorCode": json_values,
    "error": json_values,
    "error_description": json_values,
}
token_like = st.fixed_dictionaries({}, optional=_token_fields)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = (
    st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | json_values.map(_dumps)
    | token_like.map(_dumps)
    | st.lists(token_like, max_size=3).map(_dumps)
)


def _no_canary(where: str, text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{where} shows a secret: {text[:200]!r}"


def _documented(exc: TokenkeepError) -> None:
    message = str(exc)
    assert message.strip(), type(exc)
    _no_canary(type(exc).__name__, message)
    _no_canary(type(exc).__name__ + " repr", repr(exc))


def _read(body: bytes, endpoint: str, parse: Any) -> Any:
    """What the client does with a 200 answer's body (the real code path, no network)."""
    answer = _Answer(200, body, {}, None)
    with _provider_answer():
        return parse(TokenEndpointClient._json_object(answer, endpoint))


_INF_ISSUED_AT = b'{"access_token":"a","instance_url":"https://x","issued_at":1e999}'


@FUZZ
@given(body=bodies, strict=st.booleans())
@example(body=_INF_ISSUED_AT, strict=False)
@example(body=_INF_ISSUED_AT.replace(b"1e999", b"NaN"), strict=True)
def test_token_answers(body: bytes, strict: bool) -> None:
    def parse(data: dict[str, Any]) -> Any:
        return salesforce.parse_token_response(
            data,
            received_at=1.7e9,
            client_secret=Secret(CLIENT_SECRET),
            endpoint="token",
            strict_signature=strict,
        )

    try:
        tokens = _read(body, "token", parse)
    except TokenkeepError as exc:
        _documented(exc)
        return
    assert tokens.instance_url
    assert isinstance(tokens.access_token, Secret)
    _no_canary("TokenResponse repr", repr(tokens))
    _no_canary("TokenResponse.raw", json.dumps(tokens.raw, default=str))
    assert tokens.issued_at_ms is None or isinstance(tokens.issued_at_ms, int)


@FUZZ
@given(body=bodies)
@example(body=b'{"active":true,"exp":-1e999,"iat":NaN}')
def test_introspection_answers(body: bytes) -> None:
    try:
        result = _read(body, "introspect", salesforce.parse_introspection)
    except TokenkeepError as exc:
        _documented(exc)
        return
    assert isinstance(result.active, bool)
    for value in (result.exp, result.iat, result.nbf):
        assert value is None or isinstance(value, int)


@FUZZ
@given(body=bodies, id_url=st.none() | st.text(max_size=80))
def test_identity_and_userinfo_answers(body: bytes, id_url: str | None) -> None:
    try:
        identity = _read(
            body, "userinfo", lambda data: salesforce.parse_identity(data, id_url=id_url)
        )
    except TokenkeepError as exc:
        _documented(exc)
        return
    assert identity.user_id
    assert identity.org_id


@FUZZ
@given(status=st.integers(100, 599), body=bodies)
@example(status=100, body=b'{"access_token": "x", "error": ""}')  # found by this test
@example(status=400, body=b'[{"errorCode": "", "message": "m"}]')
def test_error_bodies(status: int, body: bytes) -> None:
    """The OAuth error reader, the REST error array and the proxy/diagnosis answer reader."""
    error, description = salesforce.parse_oauth_error(status, body)
    assert isinstance(error, str)
    assert error
    assert description is None or isinstance(description, str)
    for entry in salesforce.parse_rest_errors(body):
        assert isinstance(entry.error_code, str)
        assert isinstance(entry.message, str)
    answer = read_api_answer(status, body, {"Retry-After": "5"})
    assert answer.status == status
    assert answer.error_code is None or isinstance(answer.error_code, str)
    json.dumps(answer.evidence())  # the log and the cause report can always show it


@FUZZ
@given(
    value=st.text(max_size=120)
    | st.builds(
        lambda a, b, tail: f"api-usage={a}/{b}{tail}",
        st.integers(0, 10**30).map(str) | st.just("9" * 5000),
        st.integers(0, 10**30).map(str),
        st.text(max_size=30),
    )
)
def test_sforce_limit_info(value: str) -> None:
    parsed = salesforce.parse_limit_info(value)
    if parsed is not None:
        used, limit = parsed
        assert 0 <= used < 10**18
        assert 0 <= limit < 10**18
        assert "api-usage=" in value


@FUZZ
@given(value=st.text(max_size=40) | st.sampled_from(["inf", "-inf", "nan", "1e999", "1e308"]))
def test_retry_after(value: str) -> None:
    seconds = retry_after_seconds({"Retry-After": value})
    if seconds is None:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0
    # What the proxy turns it into for its own 503: whole seconds, never a crash.
    exc = UpstreamTransportError("token answered 503", kind="http_status", retry_after=seconds)
    whole = error_retry_after(exc, 1.7e9)
    assert whole is not None
    assert whole >= 1
