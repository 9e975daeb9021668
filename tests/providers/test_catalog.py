"""The provider catalog is data (providers.yaml shipped in the package)."""

from __future__ import annotations

import pytest

from tokenkeep.errors import NotFoundError
from tokenkeep.providers import get_provider, load_catalog


def test_salesforce_entry() -> None:
    sf = get_provider("salesforce")
    assert sf.token_path == "/services/oauth2/token"
    assert sf.authorize_path == "/services/oauth2/authorize"
    assert sf.revoke_path == "/services/oauth2/revoke"
    assert sf.introspect_path == "/services/oauth2/introspect"
    assert sf.userinfo_path == "/services/oauth2/userinfo"
    assert sf.default_scopes == ("api", "refresh_token")
    assert sf.login_urls == {
        "production": "https://login.salesforce.com",
        "sandbox": "https://test.salesforce.com",
    }
    assert sf.default_session_timeout_seconds == 7200
    assert "salesforce" in load_catalog()


@pytest.mark.parametrize(
    ("url", "is_login"),
    [
        ("https://login.salesforce.com", True),
        ("https://LOGIN.salesforce.com/", True),
        ("https://test.salesforce.com", True),
        ("https://acme.my.salesforce.com", False),
        ("http://127.0.0.1:8500", False),
    ],
)
def test_login_host_vs_my_domain(url: str, is_login: bool) -> None:
    assert get_provider("salesforce").is_login_host(url) is is_login


def test_unknown_provider() -> None:
    with pytest.raises(NotFoundError):
        get_provider("nope")
