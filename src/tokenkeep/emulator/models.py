"""The emulator's data: orgs, users, connected apps, token families, sessions, hosts.

Plain records plus the few rules that belong to one record (an app's access policy, a
refresh-token policy's syntax). The rules across records live in state.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from tokenkeep.emulator.ids import IdFactory

__all__ = [
    "DEFAULT_SCOPE",
    "EXPIRED",
    "REFRESH_SCOPES",
    "AccessToken",
    "App",
    "AuthCode",
    "Family",
    "HostBinding",
    "OAuthError",
    "Org",
    "User",
    "build_orgs_and_apps",
    "parse_policy",
]

DEFAULT_SCOPE = "api refresh_token"
REFRESH_SCOPES = frozenset({"refresh_token", "offline_access"})
POLICY_KINDS = ("valid_until_revoked", "immediately", "expire_after", "expire_if_unused")
EXPIRED = "expired access/refresh token"


class OAuthError(Exception):
    """An OAuth error response: 400 ``{"error", "error_description"}`` by default."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def parse_policy(value: str) -> tuple[str, int]:
    """``"expire_after:3600"`` → ``("expire_after", 3600)``; raises ValueError when invalid."""
    kind, _, seconds = value.partition(":")
    if kind not in POLICY_KINDS:
        raise ValueError(f"refresh_token_policy must be one of {', '.join(POLICY_KINDS)}")
    if kind in ("expire_after", "expire_if_unused"):
        if not seconds.isdigit() or int(seconds) <= 0:
            raise ValueError(f"{kind} needs a positive number of seconds, e.g. {kind}:3600")
        return kind, int(seconds)
    if seconds:
        raise ValueError(f"{kind} takes no argument")
    return kind, 0


@dataclass
class User:
    """A Salesforce user of one org."""

    username: str
    password: str
    user_id: str
    org_id: str
    email: str
    display_name: str
    active: bool = True

    def public(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": self.password,
            "user_id": self.user_id,
            "active": self.active,
        }


@dataclass
class Org:
    """One org: its hosts, settings, users and data."""

    index: int
    org_id: str
    name: str
    instance_url: str
    users: list[User]
    session_timeout_seconds: int = 7200
    lock_sessions_to_ip: bool = False
    api_client_control: bool = False
    allowed_client_ids: set[str] = field(default_factory=set)
    read_only: bool = False
    invalidate_sessions_on_read_only: bool = False
    # SALESFORCE.md marks the status of INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE
    # UNCERTAIN. simple-salesforce users report it as SalesforceGeneralError, which that
    # library raises for statuses other than 300/400/401/403/404: a 5xx, so 503.
    maintenance_status_code: int = 503
    daily_api_limit: int = 15000
    api_usage: int = 0
    usage_day: int = -1
    # What a deactivated user gets from a new login (password, JWT, code) and from a refresh
    # of an old grant: SALESFORCE.md marks the text UNCERTAIN. Other revoked refresh tokens
    # (password change, app revoke) answer invalid_grant / expired access/refresh token.
    inactive_user_error: str = "inactive_user"
    # Login IP ranges (CIDRs) of the user's profile; empty means anywhere.
    login_ip_ranges: list[str] = field(default_factory=list)
    records: Any = None

    @property
    def org_id15(self) -> str:
        return self.org_id[:15]

    @property
    def my_domain_url(self) -> str:
        # The instance host doubles as the org's My Domain host (one port per org).
        return self.instance_url

    def settings(self) -> dict[str, Any]:
        return {
            "session_timeout_seconds": self.session_timeout_seconds,
            "lock_sessions_to_ip": self.lock_sessions_to_ip,
            "api_client_control": self.api_client_control,
            "allowed_client_ids": sorted(self.allowed_client_ids),
            "read_only": self.read_only,
            "invalidate_sessions_on_read_only": self.invalidate_sessions_on_read_only,
            "maintenance_status_code": self.maintenance_status_code,
            "daily_api_limit": self.daily_api_limit,
            "api_usage": self.api_usage,
            "inactive_user_error": self.inactive_user_error,
            "login_ip_ranges": list(self.login_ip_ranges),
        }

    def public(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "name": self.name,
            "instance_url": self.instance_url,
            "my_domain_url": self.my_domain_url,
            "users": [u.public() for u in self.users],
            **self.settings(),
        }


@dataclass
class App:
    """A connected app (one consumer key), valid in every org of the emulator."""

    name: str
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    private_key_pem: str
    certificate_pem: str
    pre_authorized: set[str] = field(default_factory=set)
    run_as: dict[str, str] = field(default_factory=dict)  # org_id -> username
    rotate_refresh_tokens: bool = False
    refresh_token_policy: str = "valid_until_revoked"
    max_approvals: int = 5
    # "Admin approved users are pre-authorized": only `pre_authorized` users may use the app
    # (token grants answer invalid_app_access).
    admin_approved_only: bool = False
    # The connected app's own session timeout (overrides the org's when set).
    session_timeout_seconds: int | None = None
    _public_key: Any = field(default=None, repr=False, compare=False)

    def check_access(self, user: User) -> None:
        """Raise invalid_app_access when only admin-approved users may use this app."""
        if self.admin_approved_only and user.username not in self.pre_authorized:
            raise OAuthError("invalid_app_access", "user is not admin approved to access this app")

    def certificate_key(self) -> Any:
        """The public key of the registered certificate (JWT-bearer assertions)."""
        if self._public_key is None:
            cert = x509.load_pem_x509_certificate(self.certificate_pem.encode())
            self._public_key = cert.public_key()
        return self._public_key

    def settings(self) -> dict[str, Any]:
        return {
            "rotate_refresh_tokens": self.rotate_refresh_tokens,
            "refresh_token_policy": self.refresh_token_policy,
            "max_approvals": self.max_approvals,
            "admin_approved_only": self.admin_approved_only,
            "session_timeout_seconds": self.session_timeout_seconds,
            "pre_authorized_usernames": sorted(self.pre_authorized),
            "run_as": dict(self.run_as),
        }

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "private_key_pem": self.private_key_pem,
            "certificate_pem": self.certificate_pem,
            **self.settings(),
        }


@dataclass(eq=False)
class Family:
    """One grant (an "approval"): its refresh token, if any, and its access tokens."""

    client_id: str
    user: User
    scope: str
    created_at: float
    last_used: float
    address: str
    refresh_token: str | None = None
    retired: set[str] = field(default_factory=set)
    access_tokens: list[str] = field(default_factory=list)
    revoked: bool = False


@dataclass(eq=False)
class AccessToken:
    """A session: inactivity-timed, bound to the address that obtained it."""

    token: str
    family: Family
    issued_at: float
    last_active: float
    address: str
    revoked: bool = False

    @property
    def user(self) -> User:
        return self.family.user

    @property
    def client_id(self) -> str:
        return self.family.client_id


@dataclass
class HostBinding:
    """What a listening port serves: the login host, an org's instance host, or a host an
    org moved away from (``org`` None, kind ``"instance"``)."""

    kind: str  # "login" | "instance"
    url: str
    org: Org | None = None


@dataclass
class AuthCode:
    client_id: str
    user: User
    redirect_uri: str
    scope: str
    code_challenge: str | None
    created_at: float
    address: str


@functools.lru_cache(maxsize=8)
def _app_keys(index: int) -> tuple[str, str]:
    """App *index*'s JWT key pair, generated once per process: RSA generation costs ~0.1 s
    and emulators start once per test. Each app of one emulator still has its own key."""
    from tokenkeep.emulator.keys import new_app_keypair

    return new_app_keypair()


def build_orgs_and_apps(
    n_orgs: int, *, seed: int | None, instance_urls: list[str], n_apps: int = 1
) -> tuple[list[Org], list[App]]:
    """Orgs with two users each (the first pre-authorized for JWT and the run-as user for
    client credentials) and one connected app."""
    ids = IdFactory(seed)
    orgs = []
    for i in range(n_orgs):
        org_id = ids.sf_id("00D")
        name = f"org{i + 1}"
        users = [
            User(
                username=f"{who}@{name}.example.com",
                password=ids.secret(12).lower() + "Aa1!",
                user_id=ids.sf_id("005"),
                org_id=org_id,
                email=f"{who}@{name}.example.com",
                display_name=f"{who.title()} {name.title()}",
            )
            for who in ("admin", "user")
        ]
        orgs.append(Org(i, org_id, name, instance_urls[i], users))
    apps = []
    for i in range(n_apps):
        key_pem, cert_pem = _app_keys(i)
        apps.append(
            App(
                name="tokenkeep-emulator-app" + (f"-{i + 1}" if i else ""),
                client_id=ids.consumer_key(),
                client_secret=ids.secret(64),
                redirect_uris=["http://127.0.0.1:8400/oauth/callback", "http://localhost/callback"],
                private_key_pem=key_pem,
                certificate_pem=cert_pem,
                pre_authorized={o.users[0].username for o in orgs},
                run_as={o.org_id: o.users[0].username for o in orgs},
            )
        )
    return orgs, apps
