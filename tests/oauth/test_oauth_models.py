"""OAuthApp validation and the value types' secrecy."""

from __future__ import annotations

import pytest

from tokenkeep.errors import ValidationError
from tokenkeep.oauth.models import Introspection, OAuthApp
from tokenkeep.secret import Secret


def test_login_url_and_scopes_are_normalised() -> None:
    app = OAuthApp(client_id="c", login_url="https://test.salesforce.com/", scopes="api web")  # type: ignore[arg-type]
    assert app.login_url == "https://test.salesforce.com"
    assert app.scopes == ("api", "web")
    assert app.refreshable_by_grant


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": ""},
        {"login_url": "login.salesforce.com"},
        {"auth_mode": "password"},
        {"auth_mode": "jwt_bearer", "username": "a@b.c"},
        {"auth_mode": "jwt_bearer", "private_key": Secret("k")},
        {"auth_mode": "client_credentials"},
        {"session_timeout_seconds": 0},
    ],
)
def test_invalid_apps_are_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"client_id": "c", "login_url": "https://login.salesforce.com"}
    fields.update(kwargs)
    with pytest.raises(ValidationError):
        OAuthApp(**fields)  # type: ignore[arg-type]


def test_repr_hides_secrets() -> None:
    app = OAuthApp(
        client_id="c",
        login_url="https://acme.my.salesforce.com",
        client_secret=Secret("s3cr3t-value"),
        auth_mode="jwt_bearer",
        private_key=Secret("-----BEGIN PRIVATE KEY-----xyz"),
        username="u@x",
    )
    assert "s3cr3t" not in repr(app)
    assert "BEGIN" not in repr(app)
    assert not app.refreshable_by_grant


def test_introspection_lifetime_is_exp_minus_iat() -> None:
    assert Introspection(active=True, exp=10_000, iat=2_800).lifetime_seconds == 7200
