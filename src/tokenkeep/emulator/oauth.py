"""OAuth endpoints: token (five grants), revoke, introspect, userinfo and the identity URL.

Shapes follow shared/SALESFORCE.md exactly: no ``expires_in``, ``issued_at`` a string of
epoch milliseconds, 400 ``{"error","error_description"}`` with ``Cache-Control: no-store``,
and 403 plain ``Bad_OAuth_Token`` for a bad token on identity endpoints.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

import jwt
from starlette.requests import Request
from starlette.responses import Response

from tokenkeep.emulator.http import (
    NO_STORE,
    Call,
    bad_oauth_token,
    bearer_token,
    json_response,
    oauth_error,
    read_form,
)
from tokenkeep.emulator.state import (
    DEFAULT_SCOPE,
    AccessToken,
    App,
    EmulatorState,
    HostBinding,
    OAuthError,
    User,
    parse_policy,
)

__all__ = ["JWT_BEARER", "handle_identity", "handle_oauth", "token_call_org"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANTS = ("authorization_code", "refresh_token", JWT_BEARER, "client_credentials", "password")
MAX_JWT_LIFETIME = 180  # seconds: Salesforce rejects assertions whose exp is > 3 min away
JWT_SKEW = 5


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            raw = base64.b64decode(auth[6:].strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        cid, _, secret = raw.partition(":")
        return unquote(cid), unquote(secret)
    return form.get("client_id") or None, form.get("client_secret") or None


def authenticate_client(
    state: EmulatorState, request: Request, form: dict[str, str], *, require_secret: bool
) -> tuple[App, bool]:
    """The calling app, and whether it proved its secret. Raises OAuthError."""
    client_id, secret = _client_credentials(request, form)
    app = state.apps_by_id.get(client_id or "")
    if app is None:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if secret is not None and secret != app.client_secret:
        raise OAuthError("invalid_client", "invalid client credentials")
    if require_secret and secret is None:
        raise OAuthError("invalid_client", "invalid client credentials")
    return app, secret is not None


def _inactive(state: EmulatorState, user: User) -> OAuthError:
    return OAuthError(state.org_of(user).inactive_user_error, "user is inactive")


def _login_user(state: EmulatorState, binding: HostBinding, username: str) -> User | None:
    user = state.users_by_name.get(username)
    # On a My Domain host only that org's users exist.
    if user is None or (binding.org is not None and user.org_id != binding.org.org_id):
        return None
    return user


def token_call_org(state: EmulatorState, binding: HostBinding, form: dict[str, str]) -> str | None:
    """The org a token call is for, before it is handled (faults scoped to one org).

    An org's own host names it; on the shared login host the form does: the refresh
    token's family, the code's or the password grant's user, the assertion's ``sub``.
    None when the form names no known user (the grant then fails on its own).
    """
    if binding.org is not None:
        return binding.org.org_id
    grant = form.get("grant_type", "")
    user: User | None = None
    if grant == "refresh_token":
        family = state.refresh_index.get(form.get("refresh_token", ""))
        user = family.user if family is not None else None
    elif grant == "authorization_code":
        code = state.codes.get(form.get("code", ""))
        user = code.user if code is not None else None
    elif grant == "password":
        user = _login_user(state, binding, form.get("username", ""))
    elif grant == JWT_BEARER:
        try:
            claims = jwt.decode(form.get("assertion", ""), options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        user = _login_user(state, binding, str(claims.get("sub", "")))
    return user.org_id if user is not None else None


def _grant(
    state: EmulatorState, request: Request, binding: HostBinding, form: dict[str, str], call: Call
) -> dict[str, Any]:
    grant = form.get("grant_type", "")
    address = request.client.host if request.client else ""
    if grant not in GRANTS:
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    if grant == "authorization_code":
        app, proved = authenticate_client(state, request, form, require_secret=False)
        code = state.redeem_code(
            app, form.get("code", ""), form.get("redirect_uri", ""), form.get("code_verifier")
        )
        call.org_id = code.user.org_id
        if code.code_challenge is None and not proved:
            raise OAuthError("invalid_client", "invalid client credentials")
        app.check_access(code.user)
        at, refresh = state.issue(app, code.user, code.scope, address, refresh=True)
        return state.token_response(app, at, refresh)
    if grant == "refresh_token":
        app, _ = authenticate_client(state, request, form, require_secret=False)
        family = state.refresh_index.get(form.get("refresh_token", ""))
        if family is not None:
            call.org_id = family.user.org_id
        return state.refresh(app, form.get("refresh_token", ""), address)
    if grant == JWT_BEARER:
        return _jwt_bearer(state, binding, form, address, call)
    if grant == "client_credentials":
        app, _ = authenticate_client(state, request, form, require_secret=True)
        if binding.org is None:
            raise OAuthError("invalid_grant", "request not supported on this domain")
        call.org_id = binding.org.org_id
        run_as = state.users_by_name.get(app.run_as.get(binding.org.org_id, ""))
        if run_as is None:
            raise OAuthError("invalid_grant", "no client credentials user enabled")
        if not run_as.active:
            raise _inactive(state, run_as)
        at, _ = state.issue(app, run_as, "api", address, refresh=False)
        return state.token_response(app, at, None)
    # password
    app, _ = authenticate_client(state, request, form, require_secret=True)
    user = _login_user(state, binding, form.get("username", ""))
    if user is None or form.get("password") != user.password:
        raise OAuthError("invalid_grant", "authentication failure")
    call.org_id = user.org_id
    if not user.active:
        raise _inactive(state, user)
    app.check_access(user)
    at, _ = state.issue(app, user, "api", address, refresh=False)
    return state.token_response(app, at, None)


def _jwt_bearer(
    state: EmulatorState, binding: HostBinding, form: dict[str, str], address: str, call: Call
) -> dict[str, Any]:
    assertion = form.get("assertion", "")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", "invalid assertion") from exc
    app = state.apps_by_id.get(str(claims.get("iss", "")))
    if app is None:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    try:
        # Time claims are checked below against the emulator's clock, not the system's.
        jwt.decode(
            assertion,
            app.certificate_key(),
            algorithms=["RS256"],
            options={
                "verify_exp": False,
                "verify_aud": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", "invalid assertion") from exc
    audiences = {state.login_url.rstrip("/")}
    if binding.org is not None:
        audiences.add(binding.org.my_domain_url.rstrip("/"))
    aud = claims.get("aud")
    aud_values = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a.rstrip("/") in audiences for a in aud_values):
        raise OAuthError("invalid_grant", "Audience validation failed")
    now = state.clock.time()
    exp = claims.get("exp")
    if (
        not isinstance(exp, int | float)
        or exp < now - JWT_SKEW
        or exp > now + MAX_JWT_LIFETIME + JWT_SKEW
    ):
        raise OAuthError("invalid_grant", "invalid assertion")
    user = _login_user(state, binding, str(claims.get("sub", "")))
    if user is None or user.username not in app.pre_authorized:
        raise OAuthError("invalid_grant", "user hasn't approved this consumer")
    call.org_id = user.org_id
    if not user.active:
        raise _inactive(state, user)
    at, _ = state.issue(app, user, "api", address, refresh=False)
    return state.token_response(app, at, None)


async def _token(
    state: EmulatorState,
    request: Request,
    binding: HostBinding,
    call: Call,
    form: dict[str, str] | None,
) -> Response:
    if request.method != "POST":
        return oauth_error("invalid_request", "must use HTTP POST")
    if form is None:
        form = await read_form(request)
    call.grant_type = form.get("grant_type") or None
    try:
        body = _grant(state, request, binding, form, call)
    except OAuthError as err:
        return oauth_error(err.error, err.description, err.status)
    return json_response(body, headers=NO_STORE)


async def _revoke(state: EmulatorState, request: Request) -> Response:
    form = await read_form(request)
    token = form.get("token", "")
    if not token:
        return oauth_error("unsupported_token_type", "missing token")
    if not state.revoke_token(token):
        return oauth_error("invalid_token", "invalid token")
    return Response(b"", status_code=200, headers=NO_STORE)


def _introspect_access(state: EmulatorState, at: AccessToken) -> dict[str, Any]:
    return {
        "active": True,
        "scope": at.family.scope,
        "client_id": at.client_id,
        "username": at.user.username,
        "sub": state.identity_url(at.user),
        "token_type": "access_token",
        "exp": int(state.expires_at(at)),
        "iat": int(at.issued_at),
        "nbf": int(at.issued_at),
    }


async def _introspect(state: EmulatorState, request: Request) -> Response:
    form = await read_form(request)
    try:
        app, _ = authenticate_client(state, request, form, require_secret=True)
    except OAuthError as err:
        return oauth_error(err.error, err.description, err.status)
    token = form.get("token", "")
    inactive = json_response({"active": False}, headers=NO_STORE)
    at = state.live(token)
    if at is not None:
        if at.client_id != app.client_id:
            return inactive  # an app may only introspect its own tokens
        return json_response(_introspect_access(state, at), headers=NO_STORE)
    family = state.refresh_index.get(token)
    if (
        family is None
        or family.revoked
        or family.refresh_token != token
        or family.client_id != app.client_id
        or parse_policy(app.refresh_token_policy)[0] == "immediately"
    ):
        return inactive
    return json_response(
        {
            "active": True,
            "scope": family.scope,
            "client_id": family.client_id,
            "username": family.user.username,
            "sub": state.identity_url(family.user),
            "token_type": "refresh_token",
            "iat": int(family.created_at),
            "nbf": int(family.created_at),
        },
        headers=NO_STORE,
    )


def _urls(instance_url: str, user: User) -> dict[str, str]:
    base = instance_url
    org = user.org_id
    return {
        "enterprise": f"{base}/services/Soap/c/{{version}}/{org}",
        "metadata": f"{base}/services/Soap/m/{{version}}/{org}",
        "partner": f"{base}/services/Soap/u/{{version}}/{org}",
        "rest": f"{base}/services/data/v{{version}}/",
        "sobjects": f"{base}/services/data/v{{version}}/sobjects/",
        "search": f"{base}/services/data/v{{version}}/search/",
        "query": f"{base}/services/data/v{{version}}/query/",
        "recent": f"{base}/services/data/v{{version}}/recent/",
        "tooling_soap": f"{base}/services/Soap/T/{{version}}/{org}",
        "tooling_rest": f"{base}/services/data/v{{version}}/tooling/",
        "profile": f"{base}/{user.user_id}",
        "users": f"{base}/services/data/v{{version}}/chatter/users",
        "custom_domain": base,
    }


def identity_document(state: EmulatorState, user: User) -> dict[str, Any]:
    """The identity URL's body (GET /id/{org}/{user})."""
    org = state.org_of(user)
    return {
        "id": state.identity_url(user),
        "asserted_user": True,
        "user_id": user.user_id,
        "organization_id": user.org_id,
        "username": user.username,
        "nick_name": user.username.split("@")[0],
        "display_name": user.display_name,
        "email": user.email,
        "email_verified": True,
        "first_name": user.display_name.split()[0],
        "last_name": user.display_name.split()[-1],
        "timezone": "Europe/London",
        "active": user.active,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "urls": _urls(org.instance_url, user),
        "is_lightning_login_user": False,
    }


def _userinfo(state: EmulatorState, at: AccessToken) -> dict[str, Any]:
    user = at.user
    org = state.org_of(user)
    return {
        "sub": state.identity_url(user),
        "user_id": user.user_id,
        "organization_id": user.org_id,
        "preferred_username": user.username,
        "nickname": user.username.split("@")[0],
        "name": user.display_name,
        "email": user.email,
        "email_verified": True,
        "given_name": user.display_name.split()[0],
        "family_name": user.display_name.split()[-1],
        "zoneinfo": "Europe/London",
        "locale": "en_US",
        "active": user.active,
        "user_type": "STANDARD",
        "language": "en_US",
        "urls": _urls(org.instance_url, user),
    }


def _session_from(state: EmulatorState, request: Request) -> AccessToken | None:
    token = bearer_token(request) or request.query_params.get("oauth_token")
    return state.session(token) if token else None


async def handle_oauth(
    state: EmulatorState,
    request: Request,
    binding: HostBinding,
    call: Call,
    form: dict[str, str] | None = None,
) -> Response | None:
    """``/services/oauth2/*`` except authorize; None when the path is not one of ours.

    ``form``: the token call's form when the caller already read it.
    """
    path = request.url.path.rstrip("/")
    if path == "/services/oauth2/token":
        return await _token(state, request, binding, call, form)
    if path == "/services/oauth2/revoke":
        return await _revoke(state, request)
    if path == "/services/oauth2/introspect":
        return await _introspect(state, request)
    if path == "/services/oauth2/userinfo":
        at = _session_from(state, request)
        if at is None:
            return bad_oauth_token()
        call.org_id = at.user.org_id
        return json_response(_userinfo(state, at))
    return None


async def handle_identity(state: EmulatorState, request: Request, call: Call) -> Response:
    """``GET /id/{org_id}/{user_id}`` with the user's own (or an org-mate's) token."""
    at = _session_from(state, request)
    parts = request.url.path.strip("/").split("/")
    if at is None or len(parts) != 3:
        return bad_oauth_token()
    _, org_id, user_id = parts
    call.org_id = at.user.org_id
    if org_id[:15] != at.user.org_id[:15]:
        return bad_oauth_token()
    user = next((u for u in state.org_of(at.user).users if u.user_id[:15] == user_id[:15]), None)
    if user is None:
        return bad_oauth_token()
    return json_response(identity_document(state, user))


__all__ += ["DEFAULT_SCOPE", "authenticate_client", "identity_document"]
