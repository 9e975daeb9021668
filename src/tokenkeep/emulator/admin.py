"""The admin API: the same operations as Python methods (``emu.admin``) and as JSON routes
under ``/_emulator/`` on the login host.

Every method validates its input and raises :class:`AdminError` (HTTP 400/404/409 with
``{"error": {"code", "message"}}``) rather than half-applying a change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokenkeep.emulator.authorize import redirect_with
from tokenkeep.emulator.faults import FaultError, Faults
from tokenkeep.emulator.http import json_response
from tokenkeep.emulator.state import DEFAULT_SCOPE, EmulatorState, Org, User, parse_policy

__all__ = ["Admin", "AdminError", "bad_request"]


_ORG_BOOLS = (
    "lock_sessions_to_ip",
    "api_client_control",
    "read_only",
    "invalidate_sessions_on_read_only",
)
_INACTIVE_ERRORS = ("inactive_user", "invalid_grant")
_MAX_TIMEOUT = 7 * 86_400


class AdminError(Exception):
    """A rejected admin request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str) -> AdminError:
    """A 400 ``bad_request`` admin error."""
    return AdminError(400, "bad_request", message)


_bad = bad_request


def _bool(changes: dict[str, Any], key: str) -> bool:
    value = changes[key]
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false")
    return value


def _int(changes: dict[str, Any], key: str, low: int, high: int) -> int:
    value = changes[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"{key} must be an integer from {low} to {high}")
    return value


@dataclass
class _Pristine:
    orgs: dict[str, dict[str, Any]]
    users: dict[str, tuple[str, bool]]
    apps: dict[str, dict[str, Any]]


class Admin:
    """Drive the emulator: org/app/user settings, sessions, clock, faults, request log,
    reset."""

    def __init__(
        self,
        state: EmulatorState,
        faults: Faults,
        *,
        open_host: Callable[[Org, str], str] | None = None,
        new_records: Callable[[Org], Any] | None = None,
        describe: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.state = state
        self.faults = faults
        self._open_host = open_host
        self._new_records = new_records
        self._describe = describe
        self._pristine = _Pristine(
            orgs={o.org_id: {**o.settings(), "instance_url": o.instance_url} for o in state.orgs},
            users={u.username: (u.password, u.active) for u in state.users_by_name.values()},
            apps={
                a.client_id: {**a.settings(), "redirect_uris": a.redirect_uris} for a in state.apps
            },
        )

    # -- lookups ---------------------------------------------------------------------------
    def _org(self, org_id: str) -> Org:
        org = self.state.orgs_by_id.get(org_id) or next(
            (o for o in self.state.orgs if o.org_id15 == org_id), None
        )
        if org is None:
            raise AdminError(404, "not_found", f"no org {org_id}")
        return org

    def _user(self, username: str) -> User:
        user = self.state.users_by_name.get(username)
        if user is None:
            raise AdminError(404, "not_found", f"no user {username}")
        return user

    def _app(self, client_id: str) -> Any:
        app = self.state.apps_by_id.get(client_id)
        if app is None:
            raise AdminError(404, "not_found", f"no connected app {client_id}")
        return app

    # -- operations ------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Orgs, users, apps (with secrets and keys), clock, faults, token counts."""
        base = self._describe() if self._describe else {}
        return {
            **base,
            "clock": {"time": self.state.clock.time()},
            "orgs": [o.public() for o in self.state.orgs],
            "apps": [a.public() for a in self.state.apps],
            "faults": self.faults.public(),
            "tokens": {
                "access": sum(1 for t in self.state.access.values() if not t.revoked),
                "refresh": sum(
                    1
                    for f in {id(f): f for f in self.state.refresh_index.values()}.values()
                    if not f.revoked and f.refresh_token
                ),
            },
        }

    def patch_org(
        self, org_id: str, changes: dict[str, Any] | None = None, /, **settings: Any
    ) -> dict[str, Any]:
        """Change org settings (a dict or keywords); ``instance_url="new"`` moves the org
        to a new port."""
        changes = {**(changes or {}), **settings}
        org = self._org(org_id)
        known = {
            *_ORG_BOOLS,
            "session_timeout_seconds",
            "allowed_client_ids",
            "maintenance_status_code",
            "daily_api_limit",
            "api_usage",
            "inactive_user_error",
            "login_ip_ranges",
            "instance_url",
        }
        unknown = set(changes) - known
        if unknown:
            raise _bad(f"unknown org settings: {', '.join(sorted(unknown))}")
        new: dict[str, Any] = {}
        for key in _ORG_BOOLS:
            if key in changes:
                new[key] = _bool(changes, key)
        if "session_timeout_seconds" in changes:
            new["session_timeout_seconds"] = _int(
                changes, "session_timeout_seconds", 1, _MAX_TIMEOUT
            )
        if "maintenance_status_code" in changes:
            new["maintenance_status_code"] = _int(changes, "maintenance_status_code", 400, 599)
        if "daily_api_limit" in changes:
            new["daily_api_limit"] = _int(changes, "daily_api_limit", 0, 10**9)
        if "api_usage" in changes:
            new["api_usage"] = _int(changes, "api_usage", 0, 10**9)
        if "inactive_user_error" in changes:
            if changes["inactive_user_error"] not in _INACTIVE_ERRORS:
                raise _bad(f"inactive_user_error must be one of {', '.join(_INACTIVE_ERRORS)}")
            new["inactive_user_error"] = changes["inactive_user_error"]
        if "login_ip_ranges" in changes:
            ranges = changes["login_ip_ranges"]
            if not isinstance(ranges, list) or not all(isinstance(r, str) for r in ranges):
                raise _bad("login_ip_ranges must be a list of CIDRs")
            try:
                for net in ranges:
                    ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise _bad(f"login_ip_ranges: {exc}") from exc
            new["login_ip_ranges"] = list(ranges)
        if "allowed_client_ids" in changes:
            ids = changes["allowed_client_ids"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise _bad("allowed_client_ids must be a list of client ids")
            new["allowed_client_ids"] = set(ids)
        if "instance_url" in changes:
            target = changes["instance_url"]
            if not isinstance(target, str) or not target:
                raise _bad('instance_url must be "new" or a URL on this emulator\'s host')
            if self._open_host is None:
                raise AdminError(409, "conflict", "this emulator cannot open new hosts")
            try:
                self._open_host(org, target)
            except ValueError as exc:
                raise _bad(str(exc)) from exc
        starts_read_only = new.get("read_only") is True and not org.read_only
        for key, value in new.items():
            setattr(org, key, value)
        if starts_read_only and org.invalidate_sessions_on_read_only:
            self.state.invalidate_sessions(org)
        return org.public()

    def patch_app(
        self, client_id: str, changes: dict[str, Any] | None = None, /, **settings: Any
    ) -> dict[str, Any]:
        """Change connected-app settings (rotation, refresh-token policy, approvals cap...)."""
        changes = {**(changes or {}), **settings}
        app = self._app(client_id)
        known = {
            "rotate_refresh_tokens",
            "admin_approved_only",
            "refresh_token_policy",
            "max_approvals",
            "session_timeout_seconds",
            "pre_authorized_usernames",
            "run_as",
            "redirect_uris",
        }
        unknown = set(changes) - known
        if unknown:
            raise _bad(f"unknown app settings: {', '.join(sorted(unknown))}")
        new: dict[str, Any] = {}
        for key in ("rotate_refresh_tokens", "admin_approved_only"):
            if key in changes:
                new[key] = _bool(changes, key)
        if "refresh_token_policy" in changes:
            policy = changes["refresh_token_policy"]
            if not isinstance(policy, str):
                raise _bad("refresh_token_policy must be a string")
            try:
                parse_policy(policy)
            except ValueError as exc:
                raise _bad(str(exc)) from exc
            new["refresh_token_policy"] = policy
        if "max_approvals" in changes:
            new["max_approvals"] = _int(changes, "max_approvals", 1, 1000)
        if "session_timeout_seconds" in changes:
            if changes["session_timeout_seconds"] is None:
                new["session_timeout_seconds"] = None
            else:
                new["session_timeout_seconds"] = _int(
                    changes, "session_timeout_seconds", 1, _MAX_TIMEOUT
                )
        for key, attr in (
            ("pre_authorized_usernames", "pre_authorized"),
            ("redirect_uris", "redirect_uris"),
        ):
            if key in changes:
                value = changes[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise _bad(f"{key} must be a list of strings")
                new[attr] = set(value) if attr == "pre_authorized" else list(value)
        if "run_as" in changes:
            run_as = changes["run_as"]
            if not isinstance(run_as, dict):
                raise _bad("run_as must map org ids to usernames")
            for org_id, username in run_as.items():
                self._org(org_id)
                if username is not None and self._user(username).org_id != self._org(org_id).org_id:
                    raise _bad(f"{username} is not a user of {org_id}")
            new["run_as"] = {self._org(k).org_id: v for k, v in run_as.items() if v is not None}
        for key, value in new.items():
            setattr(app, key, value)
        return app.public()

    def set_password(self, username: str, password: str) -> dict[str, Any]:
        """Change a user's password: every token of the user is revoked."""
        user = self._user(username)
        if not isinstance(password, str) or not password:
            raise _bad("password must be a non-empty string")
        user.password = password
        revoked = self._log_out(user)
        return {"username": username, "revoked_families": revoked}

    def deactivate(self, username: str) -> dict[str, Any]:
        """Deactivate a user: tokens revoked, new logins refused."""
        user = self._user(username)
        user.active = False
        return {"username": username, "revoked_families": self._log_out(user)}

    def activate(self, username: str) -> dict[str, Any]:
        """Re-activate a user (old tokens stay revoked)."""
        self._user(username).active = True
        return {"username": username, "active": True}

    def _log_out(self, user: User) -> int:
        for sid in [s for s, u in self.state.browser_sessions.items() if u is user]:
            del self.state.browser_sessions[sid]
        return self.state.revoke_user(user)

    def kill_sessions(
        self, access_token: str | None = None, username: str | None = None
    ) -> dict[str, Any]:
        """End one session (``access_token``) or every current session of ``username``;
        refresh tokens keep working. ``{"killed": N}`` counts the sessions that were live."""
        if (access_token is None) == (username is None):
            raise _bad("give either access_token or username")
        if access_token is not None:
            if not isinstance(access_token, str) or not access_token:
                raise _bad("access_token must be a non-empty string")
            at = self.state.access.get(access_token)
            if at is None:
                raise AdminError(404, "not_found", "no such access token")
            sessions = [at]
        else:
            if not isinstance(username, str) or not username:
                raise _bad("username must be a non-empty string")
            user = self._user(username)
            sessions = [at for at in self.state.access.values() if at.user is user]
        return {"killed": sum(self.state.kill_session(at) for at in sessions)}

    def revoke_app(self, client_id: str, username: str | None = None) -> dict[str, Any]:
        """Revoke an app's grants for one user, or for everyone."""
        app = self._app(client_id)
        users = [self._user(username)] if username else list(self.state.users_by_name.values())
        count = 0
        for user in users:
            count += self.state.revoke_user(user, app.client_id)
            self.state.consented.discard((app.client_id, user.user_id))
        return {"client_id": client_id, "revoked_families": count}

    def authorize(self, body: dict[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Complete an authorization for a user without HTML: ``{code, redirect_url}``."""
        body = {**(body or {}), **fields}
        for key in ("client_id", "username", "redirect_uri"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise _bad(f"{key} is required")
        app = self._app(body["client_id"])
        user = self._user(body["username"])
        if body["redirect_uri"] not in app.redirect_uris:
            raise _bad("redirect_uri is not registered for this app")
        if not user.active:
            raise AdminError(409, "conflict", f"{user.username} is inactive")
        challenge = body.get("code_challenge")
        if challenge is not None and not isinstance(challenge, str):
            raise _bad("code_challenge must be a string")
        code = self.state.new_code(
            app=app,
            user=user,
            redirect_uri=body["redirect_uri"],
            scope=str(body.get("scope") or DEFAULT_SCOPE),
            code_challenge=challenge or None,
            address="",
        )
        self.state.consented.add((app.client_id, user.user_id))
        state = body.get("state")
        url = redirect_with(body["redirect_uri"], {"code": code, "state": state or None})
        return {"code": code, "redirect_url": url}

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise _bad("seconds must be a non-negative number")
        advance = getattr(self.state.clock, "advance", None)
        if advance is None:
            raise AdminError(409, "conflict", "this clock cannot be advanced")
        advance(seconds)
        return {"time": self.state.clock.time()}

    def add_fault(self, body: dict[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Inject a fault (see faults.py for the fields)."""
        body = {**(body or {}), **fields}
        allowed = {
            "target",
            "kind",
            "status",
            "latency_seconds",
            "count",
            "duration_seconds",
            "org_id",
            "retry_after_seconds",
            "error",
            "error_description",
        }
        unknown = set(body) - allowed
        if unknown:
            raise _bad(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if body.get("org_id") is not None:
            body = {**body, "org_id": self._org(str(body["org_id"])).org_id}
        try:
            return self.faults.add(**body).public()
        except (FaultError, TypeError) as exc:
            raise _bad(str(exc)) from exc

    def clear_faults(self) -> dict[str, Any]:
        self.faults.clear()
        return {"faults": []}

    def requests(
        self,
        *,
        grant_type: str | None = None,
        org_id: str | None = None,
        path: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """The request log (newest last), filtered."""
        org15 = org_id[:15] if org_id else None
        return [
            r
            for r in self.state.log
            if (grant_type is None or r["grant_type"] == grant_type)
            and (org15 is None or (r["org_id"] or "")[:15] == org15)
            and (path is None or r["path"] == path or r["path"].startswith(path.rstrip("/") + "/"))
            and (since is None or r["time"] >= since)
        ]

    def reset(self) -> dict[str, Any]:
        """Forget every token, code, fault and logged request; restore settings and data."""
        st = self.state
        st.access.clear()
        st.refresh_index.clear()
        st.families.clear()
        st.codes.clear()
        st.browser_sessions.clear()
        st.consented.clear()
        st.log.clear()
        self.faults.clear()
        for org in st.orgs:
            saved = dict(self._pristine.orgs[org.org_id])
            url = saved.pop("instance_url")
            saved["allowed_client_ids"] = set(saved["allowed_client_ids"])
            for key, value in saved.items():
                setattr(org, key, value)
            org.usage_day = -1
            if org.instance_url != url:
                st.move_org(org, url)
            if self._new_records:
                org.records = self._new_records(org)
        for username, (password, active) in self._pristine.users.items():
            st.users_by_name[username].password = password
            st.users_by_name[username].active = active
        for app in st.apps:
            saved = self._pristine.apps[app.client_id]
            app.rotate_refresh_tokens = saved["rotate_refresh_tokens"]
            app.refresh_token_policy = saved["refresh_token_policy"]
            app.max_approvals = saved["max_approvals"]
            app.admin_approved_only = saved["admin_approved_only"]
            app.session_timeout_seconds = saved["session_timeout_seconds"]
            app.pre_authorized = set(saved["pre_authorized_usernames"])
            app.run_as = dict(saved["run_as"])
            app.redirect_uris = list(saved["redirect_uris"])
        return {"reset": True}

    # -- HTTP ------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """Route ``/_emulator/...`` (see admin_routes.py)."""
        from tokenkeep.emulator.admin_routes import route

        try:
            return json_response(await route(self, request))
        except AdminError as err:
            return json_response({"error": {"code": err.code, "message": err.message}}, err.status)
