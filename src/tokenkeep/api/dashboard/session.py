"""Dashboard logins: the session cookie, the CSRF check, and what happens without them.

* The cookie ``tk_dashboard`` holds a random token; the session itself is a row of
  ``dashboard_sessions`` (:mod:`tokenkeep.store.dashboard_sessions`), so logout and a
  revoked API key end it on every gateway. Flags: ``HttpOnly``, ``SameSite=Strict``,
  ``Path=/dashboard``, ``Secure`` when the request itself came over https
  (``request.url.scheme``; a forwarded-proto header is not trusted), 12 hours.
* CSRF: every state-changing request carries the session's token, as the form field
  ``csrf_token`` or (htmx) the header ``X-CSRF-Token``; the login form, before any session
  exists, uses a double-submit cookie. A missing or wrong token is a 403 page.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from tokenkeep.api.deps import get_store
from tokenkeep.store.dashboard_sessions import DashboardSession

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_CSRF_COOKIE",
    "PREFIX",
    "SESSION_SECONDS",
    "CsrfRefused",
    "LoginRequired",
    "Viewer",
    "ViewerDep",
    "WriterDep",
    "clear_cookie",
    "install_session_handlers",
    "safe_next",
    "set_cookie",
]

PREFIX = "/dashboard"
COOKIE = "tk_dashboard"
LOGIN_CSRF_COOKIE = "tk_dashboard_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True, slots=True)
class Viewer:
    """The logged-in admin of this request: the cookie's token and the session row."""

    token: str
    session: DashboardSession

    @property
    def csrf(self) -> str:
        return self.session.csrf_token


class LoginRequired(Exception):
    """No live session: the browser goes to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token."""


def safe_next(path: str | None) -> str:
    """A dashboard path to go back to after login (never another site)."""
    if not path or not path.startswith(PREFIX) or path.startswith("//") or "\\" in path:
        return PREFIX
    return path


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int
) -> None:
    """Set a dashboard cookie with the flags of the module docstring."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    """Remove a dashboard cookie (same flags, expired)."""
    set_cookie(response, request, name, "", max_age=0)


def new_login_csrf() -> str:
    """The login form's double-submit token."""
    return secrets.token_urlsafe(24)


async def current_viewer(request: Request) -> Viewer:
    """The session of the request's cookie, or :class:`LoginRequired`."""
    token = request.cookies.get(COOKIE, "")
    session = await get_store(request).dashboard_sessions.get(token) if token else None
    if session is None:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        raise LoginRequired(target)
    return Viewer(token, session)


async def _sent_csrf(request: Request) -> str:
    sent = request.headers.get(CSRF_HEADER)
    if sent:
        return sent
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def same_token(sent: str, expected: str) -> bool:
    """Constant-time equality of two tokens (an empty one never matches)."""
    return bool(sent) and bool(expected) and hmac.compare_digest(sent, expected)


async def writing_viewer(request: Request) -> Viewer:
    """:func:`current_viewer`, and the request must carry the session's CSRF token."""
    viewer = await current_viewer(request)
    if not same_token(await _sent_csrf(request), viewer.csrf):
        raise CsrfRefused
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
WriterDep = Annotated[Viewer, Depends(writing_viewer)]


def install_session_handlers(app: FastAPI) -> None:
    """Login redirects and the CSRF refusal page, for the dashboard's routes."""
    from tokenkeep.api.dashboard.render import error_page

    async def login_required(request: Request, exc: Exception) -> Response:
        next_path = exc.next_path if isinstance(exc, LoginRequired) else PREFIX
        target = f"{PREFIX}/login?next={quote(safe_next(next_path), safe='/')}"
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return error_page(
            request,
            403,
            "Request refused",
            "This form was sent without a valid security token (CSRF). Nothing was "
            "changed. Reload the page and try again.",
        )

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(CsrfRefused, csrf_refused)
