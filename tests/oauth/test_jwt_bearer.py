"""The JWT bearer assertion: RS256, claims, exp from the injected clock."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeep.clock import ManualClock
from tokenkeep.errors import ConfigError
from tokenkeep.oauth.jwt_bearer import MAX_ASSERTION_LIFETIME, mint_assertion
from tokenkeep.oauth.models import OAuthApp
from tokenkeep.secret import Secret


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def app(private_key: str, login_url: str = "https://login.salesforce.com") -> OAuthApp:
    return OAuthApp(
        client_id="3MVG9consumerkey",
        login_url=login_url,
        auth_mode="jwt_bearer",
        private_key=Secret(private_key),
        username="ann@acme.com",
    )


def decode(token: str, public: str, audience: str) -> dict[str, object]:
    return jwt.decode(
        token, public, algorithms=["RS256"], audience=audience, options={"verify_exp": False}
    )


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com/", "https://test.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
        ("https://acme--dev.sandbox.my.salesforce.com", "https://test.salesforce.com"),
        ("http://127.0.0.1:8500", "http://127.0.0.1:8500"),
    ],
)
def test_claims(key_pair: tuple[str, str], login_url: str, audience: str) -> None:
    private, public = key_pair
    clock = ManualClock(1_900_000_000)
    token = mint_assertion(app(private, login_url), clock=clock)
    header = jwt.get_unverified_header(token.reveal())
    assert header["alg"] == "RS256"
    claims = decode(token.reveal(), public, audience)
    assert claims["iss"] == "3MVG9consumerkey"
    assert claims["sub"] == "ann@acme.com"
    assert claims["aud"] == audience
    assert claims["exp"] == 1_900_000_000 + MAX_ASSERTION_LIFETIME


def test_exp_never_more_than_three_minutes(key_pair: tuple[str, str]) -> None:
    private, public = key_pair
    clock = ManualClock(1_900_000_000)
    token = mint_assertion(app(private), clock=clock, lifetime=3600)
    claims = decode(token.reveal(), public, "https://login.salesforce.com")
    assert claims["exp"] == 1_900_000_000 + 180


def test_assertion_is_a_secret(key_pair: tuple[str, str]) -> None:
    token = mint_assertion(app(key_pair[0]), clock=ManualClock())
    assert "eyJ" not in repr(token)
    assert str(token) == "***"


def test_bad_key_gives_a_config_error_without_the_key() -> None:
    bad = "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigError) as info:
        mint_assertion(app(bad), clock=ManualClock())
    assert "not-a-key" not in str(info.value)
