"""``/services/oauth2/authorize``: a real HTML login page, then an approve page.

Works in a browser: the login sets a per-port cookie (browsers share cookies across ports of
one host), ``prompt=login``/``consent``/``none`` behave as in Salesforce, ``state`` is
returned untouched, and a denial redirects with ``error=access_denied``.
"""

from __future__ import annotations

import html
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tokenkeep.emulator.http import read_form
from tokenkeep.emulator.state import DEFAULT_SCOPE, App, EmulatorState, HostBinding, User

__all__ = ["handle_authorize", "redirect_with"]

_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "prompt",
    "code_challenge",
    "code_challenge_method",
)

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}
label,input,button{{display:block;margin:.4em 0}}.error{{color:#b00}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def redirect_with(redirect_uri: str, params: dict[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` appended to its query string."""
    sep = "&" if "?" in redirect_uri else "?"
    return redirect_uri + sep + urlencode({k: v for k, v in params.items() if v is not None})


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def _hidden(params: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if v
    )


def _login_form(params: dict[str, str], error: str = "") -> HTMLResponse:
    msg = f'<p class="error">{html.escape(error)}</p>' if error else ""
    body = (
        f'{msg}<form method="post" action="/services/oauth2/authorize">{_hidden(params)}'
        '<input type="hidden" name="action" value="login">'
        '<label>Username <input name="username" id="username" autocomplete="username"></label>'
        '<label>Password <input name="password" id="password" type="password"></label>'
        '<button type="submit" id="Login">Log In</button></form>'
    )
    return _page("Login | Salesforce (tokenkeep emulator)", body, 401 if error else 200)


def _approve_form(app: App, user: User, params: dict[str, str], ticket: str) -> HTMLResponse:
    scope = params.get("scope") or DEFAULT_SCOPE
    body = (
        f"<p>{html.escape(app.name)} is asking to access your account "
        f"<b>{html.escape(user.username)}</b> with scopes <code>{html.escape(scope)}</code>.</p>"
        f'<form method="post" action="/services/oauth2/authorize">{_hidden(params)}'
        f'<input type="hidden" name="action" value="approve">'
        f'<input type="hidden" name="ticket" value="{ticket}">'
        '<button type="submit" name="decision" value="allow" id="oaapprove">Allow</button>'
        '<button type="submit" name="decision" value="deny" id="oadeny">Deny</button></form>'
    )
    return _page("Allow Access?", body)


def _cookie(binding_port: int) -> str:
    return f"tokenkeep_emu_sid_{binding_port}"


async def handle_authorize(
    state: EmulatorState, request: Request, binding: HostBinding, port: int
) -> Response:
    """The whole browser flow (GET shows, POST submits login or approval)."""
    form = await read_form(request) if request.method == "POST" else dict(request.query_params)
    params = {k: form.get(k, "") for k in _PARAMS}
    app = state.apps_by_id.get(params["client_id"])
    if app is None:
        return _page("Error", "<p>error=invalid_client_id: client identifier invalid</p>", 400)
    redirect_uri = params["redirect_uri"]
    if redirect_uri not in app.redirect_uris:
        # Never redirect to an unregistered URI: show the error instead (RFC 6749 4.1.2.1).
        return _page("Error", "<p>error=redirect_uri_mismatch</p>", 400)

    def fail(error: str, description: str) -> Response:
        return RedirectResponse(
            redirect_with(
                redirect_uri,
                {
                    "error": error,
                    "error_description": description,
                    "state": params["state"] or None,
                },
            ),
            status_code=302,
        )

    if params["response_type"] != "code":
        return fail("unsupported_response_type", "response type not supported")
    if params["code_challenge"] and params["code_challenge_method"] not in ("", "S256"):
        return fail("invalid_request", "code_challenge_method must be S256")
    prompts = set(params["prompt"].split())
    cookie = _cookie(port)
    user: User | None = None
    sid = request.cookies.get(cookie, "")
    if sid and "login" not in prompts:
        user = state.browser_sessions.get(sid)
    new_sid = None

    action = form.get("action") if request.method == "POST" else None
    if action == "login":
        candidate = state.users_by_name.get(form.get("username", ""))
        if binding.org is not None and candidate and candidate.org_id != binding.org.org_id:
            candidate = None
        if candidate is None or candidate.password != form.get("password"):
            return _login_form(params, "Please check your username and password.")
        if not candidate.active:
            return _login_form(params, "Your user is inactive.")
        user = candidate
        new_sid = secrets.token_urlsafe(24)
        state.browser_sessions[new_sid] = user
        prompts.discard("login")
    elif action == "approve":
        user = state.browser_sessions.get(form.get("ticket", ""))
        if user is None:
            return _login_form(params, "Your session has expired; log in again.")
        if form.get("decision") != "allow":
            return fail("access_denied", "end-user denied authorization")
        state.consented.add((app.client_id, user.user_id))
        prompts.discard("consent")

    if user is None:
        if "none" in prompts:
            return fail("login_required", "user is not logged in")
        return _login_form(params)
    consented = (app.client_id, user.user_id) in state.consented
    if not consented or "consent" in prompts:
        if "none" in prompts:
            return fail("consent_required", "user has not approved this consumer")
        ticket = new_sid or sid
        response: Response = _approve_form(app, user, params, ticket)
    else:
        code = state.new_code(
            app=app,
            user=user,
            redirect_uri=redirect_uri,
            scope=params["scope"] or DEFAULT_SCOPE,
            code_challenge=params["code_challenge"] or None,
            address=request.client.host if request.client else "",
        )
        response = RedirectResponse(
            redirect_with(redirect_uri, {"code": code, "state": params["state"] or None}),
            status_code=302,
        )
    if new_sid:
        response.set_cookie(cookie, new_sid, httponly=True, samesite="lax")
    return response
