"""The emulator's state and the rules Salesforce applies across it: issuing, refreshing
(rotation, reuse detection, policies, the approvals cap), sessions (inactivity, the
half-timeout bump) and revocation (shared/SALESFORCE.md, "Session semantics").

Nothing here touches sockets; the HTTP layer (oauth.py, gate.py, admin.py) turns requests
into calls on :class:`EmulatorState`. The records themselves live in models.py (re-exported
here).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import secrets
from collections import deque
from typing import Any

from tokenkeep.clock import Clock
from tokenkeep.emulator.models import (
    DEFAULT_SCOPE,
    EXPIRED,
    REFRESH_SCOPES,
    AccessToken,
    App,
    AuthCode,
    Family,
    HostBinding,
    OAuthError,
    Org,
    User,
    build_orgs_and_apps,
    parse_policy,
)

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
    "build_fixture",
    "parse_policy",
]


class EmulatorState:
    """All mutable state, and the rules that change it."""

    CODE_LIFETIME = 900.0
    LOG_SIZE = 100_000
    PRUNE_THRESHOLD = 50_000

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
        #: Refresh tokens whose refresh grant is being processed right now (a slow token
        #: call). Another refresh of the same token meanwhile is refused the way
        #: Salesforce refuses it: ``invalid_grant`` / "token request is already being
        #: processed".
        self.refreshing: set[str] = set()
        self.log: deque[dict[str, Any]] = deque(maxlen=self.LOG_SIZE)
        self._prune_at = self.PRUNE_THRESHOLD

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
        self.check_login_ip(user, address)
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
        if len(self.access) >= self._prune_at:
            self._prune()
        return at

    def _prune(self) -> None:
        """Forget dead sessions so long load runs do not grow memory without bound.

        A forgotten token answers exactly like a revoked or expired one (INVALID_SESSION_ID,
        ``{"active": false}``), so nothing observable changes.
        """
        now = self.clock.time()
        dead = [
            t
            for t, at in self.access.items()
            if at.revoked or now - at.last_active > self.timeout_of(at)
        ]
        for token in dead:
            at = self.access.pop(token)
            with contextlib.suppress(ValueError):
                at.family.access_tokens.remove(token)
        self._prune_at = max(self.PRUNE_THRESHOLD, 2 * len(self.access))

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
        if family is None or family.client_id != app.client_id:
            raise OAuthError("invalid_grant", EXPIRED)
        if not family.user.active:
            # Deactivation revokes the family too, but Salesforce names the inactive user
            # (not "expired"), which tells it apart from a password change.
            raise OAuthError(self.org_of(family.user).inactive_user_error, "user is inactive")
        if family.revoked:
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
        self.check_login_ip(family.user, address)
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
        timeout = self.timeout_of(at)
        if self.clock.time() - at.last_active > timeout:
            return None
        return at

    def touch(self, at: AccessToken) -> None:
        """Record a use of the session."""
        timeout = self.timeout_of(at)
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

    def timeout_of(self, at: AccessToken) -> int:
        """The session timeout: the app's override, else the org's."""
        app = self.apps_by_id.get(at.family.client_id)
        if app is not None and app.session_timeout_seconds is not None:
            return app.session_timeout_seconds
        return self.orgs_by_id[at.family.user.org_id].session_timeout_seconds

    def expires_at(self, at: AccessToken) -> float:
        return at.last_active + self.timeout_of(at)

    def check_login_ip(self, user: User, address: str) -> None:
        """Refuse a login from outside the org's allowed login IP ranges, if it has any."""
        org = self.orgs_by_id[user.org_id]
        if not org.login_ip_ranges:
            return
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is None or not any(
            ip in ipaddress.ip_network(net, strict=False) for net in org.login_ip_ranges
        ):
            raise OAuthError("invalid_grant", "IP restricted or invalid login hours")

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

    def kill_session(self, at: AccessToken) -> bool:
        """End one session, as Setup's Session Management "Remove" does: the access token
        dies, its grant's refresh token lives on. Whether the session was still live."""
        was_live = self.live(at.token) is not None
        at.revoked = True
        return was_live

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


def build_fixture(
    clock: Clock,
    n_orgs: int,
    *,
    seed: int | None,
    login_url: str,
    instance_urls: list[str],
    n_apps: int = 1,
) -> EmulatorState:
    """A fresh state: ``n_orgs`` orgs with two users each, ``n_apps`` connected apps."""
    orgs, apps = build_orgs_and_apps(n_orgs, seed=seed, instance_urls=instance_urls, n_apps=n_apps)
    return EmulatorState(clock, orgs, apps, login_url)
