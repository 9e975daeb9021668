"""OAuthApp validation, oauth_app_for, and the value types' secrecy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenkeep.errors import ValidationError
from tokenkeep.oauth.models import Introspection, OAuthApp, oauth_app_for
from tokenkeep.secret import Secret
from tokenkeep.store.records import Integration, IntegrationSecrets
from tokenkeep.vocabulary import AuthMode


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


def test_auth_mode_words_become_the_vocabulary_member() -> None:
    app = OAuthApp(client_id="c", login_url="https://acme.my.salesforce.com", auth_mode="oauth2")  # type: ignore[arg-type]
    assert app.auth_mode is AuthMode.OAUTH2
    assert OAuthApp(client_id="c", login_url="https://x.example").auth_mode is AuthMode.OAUTH2


def test_oauth_app_for_an_integration_read_with_secrets() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    integration = Integration(
        key="sf",
        provider="salesforce",
        client_id="3MVG9",
        login_url="https://acme.my.salesforce.com/",
        scopes=["api", "refresh_token"],
        auth_mode="client_credentials",
        username=None,
        session_timeout_seconds=900,
        metadata={},
        has_client_secret=True,
        has_private_key=False,
        created_at=now,
        updated_at=now,
        secrets=IntegrationSecrets(client_secret=Secret("s3cr3t-value"), private_key=None),
    )
    app = oauth_app_for(integration)
    assert (app.client_id, app.login_url, app.scopes) == (
        "3MVG9",
        "https://acme.my.salesforce.com",
        ("api", "refresh_token"),
    )
    assert app.auth_mode is AuthMode.CLIENT_CREDENTIALS
    assert app.client_secret is not None
    assert app.client_secret.reveal() == "s3cr3t-value"
    assert (app.session_timeout_seconds, app.provider) == (900, "salesforce")


def test_answer_values_are_re_exported_from_the_provider_layer() -> None:
    from tokenkeep import oauth
    from tokenkeep.oauth import models
    from tokenkeep.providers import models as provider_models

    assert models.TokenResponse is provider_models.TokenResponse is oauth.TokenResponse
    assert models.Identity is provider_models.Identity is oauth.Identity
    assert models.Introspection is provider_models.Introspection is oauth.Introspection
