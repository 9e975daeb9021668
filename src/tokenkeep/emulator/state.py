"""The emulator's state model: orgs, users, connected apps, token families and sessions.

Everything here is plain data plus the rules Salesforce applies to it (shared/SALESFORCE.md,
"Session semantics"). Nothing here touches sockets; the HTTP layer (oauth.py, gate.py,
admin.py) turns requests into calls on :class:`EmulatorState`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from tokenkeep.clock import Clock
from tokenkeep.emulator.ids import IdFactory

__all__ = [
    "DEFAULT_SCOPE",
    "AccessToken",
    "App",
    "EmulatorState",
    "Family",
    "HostBinding",
    "OAuthError",
    "Org",
    "User",
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
    # What a deactivated user gets from a NEW login (password, JWT): SALESFORCE.md marks the
    # text UNCERTAIN. Refreshing a revoked token always answers invalid_grant.
    inactive_user_error: str = "inactive_user"
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


class EmulatorState:
    """All mutable state, and the rules that change it."""

    CODE_LIFETIME = 900.0
    LOG_SIZE = 100_000

    def __init__(self, clock: Clock, orgs: list[Org], apps: list[App], login_url: str) -> None:
        self.clock = clock
        self.orgs = orgs
        self.apps = apps
        self.login_url = login_url
        self.ports: dict[int, HostBinding] = {}
        self.apps_by_id = {a.client_id: a for a in apps}
        self.orgs_by_id = {o.org_id: o for o in orgs}
        self.users_by_name = {u.username: u for o in orgs for u in o.users}
        self.access: dict[str, AccessToken] = {}
        self.refresh_index: dict[str, Family] = {}
        self.families: dict[tuple[str, str], list[Family]] = {}
        self.codes: dict[str, AuthCode] = {}
        self.browser_sessions: dict[str, User] = {}
        self.consented: set[tuple[str, str]] = set()
        self.log: deque[dict[str, Any]] = deque(maxlen=self.LOG_SIZE)

    # -- lookups ---------------------------------------------------------------------------
    def org_of(self, user: User) -> Org:
        return self.orgs_by_id[user.org_id]

    def identity_url(self, user: User) -> str:
        return f"{self.login_url}/id/{user.org_id}/{user.user_id}"

    def move_org(self, org: Org, url: str) -> None:
        """Serve ``org`` at ``url`` (a port already bound); its old host keeps answering but
        no longer knows the org (INVALID_SESSION_ID)."""
        for binding in self.ports.values():
            if binding.org is org:
                binding.org = None
        port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
        target = self.ports.get(port)
        if target is None:
            raise ValueError(f"no host is listening at {url}")
        target.org = org
        org.instance_url = url

    # -- issuing ---------------------------------------------------------------------------
    def issue(
        self, app: App, user: User, scope: str, address: str, *, refresh: bool
    ) -> tuple[AccessToken, str | None]:
        """A new grant (family) with one access token and, when asked, a refresh token."""
        now = self.clock.time()
        family = Family(app.client_id, user, scope, now, now, address)
        refresh_token = None
        if refresh and REFRESH_SCOPES & set(scope.split()):
            refresh_token = self._new_refresh(user)
            family.refresh_token = refresh_token
            self.refresh_index[refresh_token] = family
            self._cap_approvals(app, family)
        return self._new_access(family, address), refresh_token

    def _new_refresh(self, user: User) -> str:
        return f"5Aep861{secrets.token_urlsafe(60)}"

    def _new_access(self, family: Family, address: str) -> AccessToken:
        now = self.clock.time()
        token = f"{family.user.org_id[:15]}!AQ{secrets.token_urlsafe(80)}"
        at = AccessToken(token, family, now, now, address)
        self.access[token] = at
        family.access_tokens.append(token)
        return at

    def _cap_approvals(self, app: App, family: Family) -> None:
        key = (app.client_id, family.user.user_id)
        live = [f for f in self.families.get(key, []) if not f.revoked]
        live.append(family)
        # Salesforce keeps at most N approvals per user and app; the next grant evicts the
        # oldest family (docs disagree on oldest vs least recently used; oldest here).
        while len(live) > app.max_approvals:
            self.revoke_family(live.pop(0))
        self.families[key] = live

    def token_response(self, app: App, at: AccessToken, refresh_token: str | None) -> dict:
        """The token endpoint's success body, exactly as SALESFORCE.md shows it."""
        user = at.user
        identity = self.identity_url(user)
        issued_at = str(int(at.issued_at * 1000))
        signature = base64.b64encode(
            hmac.new(
                app.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        body: dict[str, Any] = {"access_token": at.token}
        if refresh_token:
            body["refresh_token"] = refresh_token
        body.update(
            signature=signature,
            scope=at.family.scope,
            instance_url=self.org_of(user).instance_url,
            id=identity,
            token_type="Bearer",
            issued_at=issued_at,
        )
        return body

    # -- refresh ---------------------------------------------------------------------------
    def refresh(self, app: App, refresh_token: str, address: str) -> dict:
        """The refresh_token grant: policy, rotation and reuse detection."""
        family = self.refresh_index.get(refresh_token)
        if family is None or family.client_id != app.client_id or family.revoked:
            raise OAuthError("invalid_grant", EXPIRED)
        if refresh_token != family.refresh_token:
            # A rotated-out token replayed: Salesforce revokes the whole family, including
            # the current refresh token and its access tokens.
            self.revoke_family(family)
            raise OAuthError("invalid_grant", EXPIRED)
        now = self.clock.time()
        kind, seconds = parse_policy(app.refresh_token_policy)
        if (
            kind == "immediately"
            or (kind == "expire_after" and now - family.created_at > seconds)
            or (kind == "expire_if_unused" and now - family.last_used > seconds)
        ):
            self.revoke_family(family)
            raise OAuthError("invalid_grant", EXPIRED)
        app.check_access(family.user)
        family.last_used = now
        new_refresh = None
        if app.rotate_refresh_tokens:
            new_refresh = self._new_refresh(family.user)
            family.retired.add(refresh_token)
            family.refresh_token = new_refresh
            self.refresh_index[new_refresh] = family
        at = self._new_access(family, address)
        return self.token_response(app, at, new_refresh)

    # -- sessions --------------------------------------------------------------------------
    def live(self, token: str) -> AccessToken | None:
        """The session of an access token if it is neither revoked nor idle too long."""
        at = self.access.get(token)
        if at is None or at.revoked:
            return None
        timeout = self.orgs_by_id[at.family.user.org_id].session_timeout_seconds
        if self.clock.time() - at.last_active > timeout:
            return None
        return at

    def touch(self, at: AccessToken) -> None:
        """Record a use of the session."""
        timeout = self.orgs_by_id[at.family.user.org_id].session_timeout_seconds
        now = self.clock.time()
        # Salesforce only refreshes "last active" once half the timeout has passed, so a
        # session used continuously early on still dies timeout/2..timeout after first use.
        if now - at.last_active >= timeout / 2:
            at.last_active = now

    def session(self, token: str) -> AccessToken | None:
        """The live session for an access token (recording the use), or None."""
        at = self.live(token)
        if at is not None:
            self.touch(at)
        return at

    def expires_at(self, at: AccessToken) -> float:
        return at.last_active + self.orgs_by_id[at.user.org_id].session_timeout_seconds

    # -- revocation ------------------------------------------------------------------------
    def revoke_family(self, family: Family) -> None:
        family.revoked = True
        for token in family.access_tokens:
            at = self.access.get(token)
            if at is not None:
                at.revoked = True

    def revoke_token(self, token: str) -> bool:
        """``/revoke``: a refresh token takes its family; an access token only itself."""
        family = self.refresh_index.get(token)
        if family is not None:
            self.revoke_family(family)
            return True
        at = self.access.get(token)
        if at is None:
            return False
        at.revoked = True
        return True

    def revoke_user(self, user: User, client_id: str | None = None) -> int:
        """Revoke every family of ``user`` (optionally of one app); returns how many."""
        count = 0
        for (cid, uid), fams in self.families.items():
            if uid == user.user_id and (client_id is None or cid == client_id):
                for fam in fams:
                    if not fam.revoked:
                        self.revoke_family(fam)
                        count += 1
        for at in self.access.values():
            if (
                at.user is user
                and not at.revoked
                and (client_id is None or at.client_id == client_id)
            ):
                at.revoked = True
                if at.family.refresh_token is None:
                    at.family.revoked = True
        return count

    def invalidate_sessions(self, org: Org) -> None:
        """Kill every access token of ``org`` (refresh tokens survive)."""
        for at in self.access.values():
            if at.user.org_id == org.org_id:
                at.revoked = True

    # -- authorization codes ---------------------------------------------------------------
    def new_code(
        self,
        *,
        app: App,
        user: User,
        redirect_uri: str,
        scope: str,
        code_challenge: str | None,
        address: str,
    ) -> str:
        code = "aPrx" + secrets.token_urlsafe(48)
        self.codes[code] = AuthCode(
            app.client_id, user, redirect_uri, scope, code_challenge, self.clock.time(), address
        )
        return code

    def redeem_code(self, app: App, code: str, redirect_uri: str, verifier: str | None) -> AuthCode:
        grant = self.codes.pop(code, None)
        if grant is None or grant.client_id != app.client_id:
            raise OAuthError("invalid_grant", "invalid authorization code")
        if self.clock.time() - grant.created_at > self.CODE_LIFETIME:
            raise OAuthError("invalid_grant", "expired authorization code")
        if redirect_uri != grant.redirect_uri:
            raise OAuthError("redirect_uri_mismatch", "redirect_uri must match configuration")
        if grant.code_challenge is not None:
            if not verifier:
                raise OAuthError("invalid_grant", "invalid code verifier")
            digest = hashlib.sha256(verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not hmac.compare_digest(expected, grant.code_challenge):
                raise OAuthError("invalid_grant", "invalid code verifier")
        if not grant.user.active:
            raise OAuthError(self.org_of(grant.user).inactive_user_error, "user is inactive")
        return grant


@functools.lru_cache(maxsize=8)
def _app_keys(index: int) -> tuple[str, str]:
    """App *index*'s JWT key pair, generated once per process: RSA generation costs ~0.1 s
    and emulators start once per test. Each app of one emulator still has its own key."""
    from tokenkeep.emulator.keys import new_app_keypair

    return new_app_keypair()


def build_fixture(
    clock: Clock,
    n_orgs: int,
    *,
    seed: int | None,
    login_url: str,
    instance_urls: list[str],
    n_apps: int = 1,
) -> EmulatorState:
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
    return EmulatorState(clock, orgs, apps, login_url)
