"""Mapping the gateway's error bodies to typed exceptions (src/tokenkeep/client/_errors.py)."""

from __future__ import annotations

import httpx
import pytest

from tokenkeep.client import TokenkeepAPIError
from tokenkeep.client._errors import error_from_response
from tokenkeep.errors import (
    ActionRequiredError,
    ConflictError,
    NeedsReauthError,
    NotFoundError,
    OrgWritePausedError,
    TokenkeepError,
    UnauthorizedError,
)


def _answer(status: int, code: str, message: str = "m", **extra: object) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, **extra}}, headers={}
    )


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (401, "unauthorized", UnauthorizedError),
        (409, "needs_reauth", NeedsReauthError),
        (424, "action_required", ActionRequiredError),
        (503, "org_write_paused", OrgWritePausedError),
    ],
)
def test_codes_shared_with_the_gateway_raise_its_classes(
    status: int, code: str, cls: type[TokenkeepError]
) -> None:
    error = error_from_response(_answer(status, code, "Nope."))
    assert type(error) is cls
    assert error.code == code
    assert error.status_code == status
    assert error.message == "Nope."


def test_details_and_request_id_are_kept() -> None:
    response = httpx.Response(
        424,
        json={"error": {"code": "action_required", "message": "m", "details": {"cause": "x"}}},
        headers={"Tokenkeep-Request-Id": "req_1"},
    )
    error = error_from_response(response)
    assert error.details == {"cause": "x", "request_id": "req_1"}


def test_other_codes_keep_the_gateways_code_and_status() -> None:
    error = error_from_response(_answer(501, "not_implemented", "Later."))
    assert isinstance(error, TokenkeepAPIError)
    assert (error.code, error.status_code, error.message) == ("not_implemented", 501, "Later.")
    # Per instance: the class default is untouched.
    assert TokenkeepAPIError.code == "api_error"


def test_a_body_that_is_not_ours_still_gives_a_useful_error() -> None:
    error = error_from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert isinstance(error, TokenkeepAPIError)
    assert error.code == "http_502"
    assert error.status_code == 502
    assert "Bad Gateway" in error.message
