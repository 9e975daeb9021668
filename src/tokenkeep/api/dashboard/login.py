"""``/dashboard/login`` (public) and ``POST /dashboard/logout``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tokenkeep.api.dashboard.render import page
from tokenkeep.api.dashboard.session import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    PREFIX,
    SESSION_SECONDS,
    CsrfRefused,
    WriterDep,
    clear_cookie,
    new_login_csrf,
    safe_next,
    same_token,
    set_cookie,
)
from tokenkeep.api.deps import get_gateway

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_LOGIN_FORM_SECONDS = 3600


async def _login_page(
    request: Request, next_path: str, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = new_login_csrf()
    response = await page(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_csrf=token,
        next_path=safe_next(next_path),
        error=error,
        title="Log in",
    )
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=_LOGIN_FORM_SECONDS)
    return response


@router.get("/login")
async def login_form(
    request: Request, next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None
) -> HTMLResponse:
    """The login form (an API key)."""
    return await _login_page(request, next_path or PREFIX)


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=500)] = PREFIX,
) -> Response:
    """Check the key (``store.api_keys.verify``), start a session, go to ``next``."""
    if not same_token(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        raise CsrfRefused
    gateway = get_gateway(request)
    key = await gateway.store.api_keys.verify(api_key.strip())
    if key is None:
        gateway.log.warning("dashboard.login_refused")
        return await _login_page(
            request, next_path, error="That API key is not valid (or was revoked).", status_code=401
        )
    token, _ = await gateway.store.dashboard_sessions.create(
        key.id, lifetime_seconds=SESSION_SECONDS
    )
    gateway.log.info("dashboard.login", api_key_id=key.id)
    response = RedirectResponse(safe_next(next_path), status_code=303)
    set_cookie(response, request, COOKIE, token, max_age=SESSION_SECONDS)
    clear_cookie(response, request, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, viewer: WriterDep) -> Response:
    """End the session (its row is deleted: the cookie is worthless everywhere)."""
    await get_gateway(request).store.dashboard_sessions.delete(viewer.token)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    clear_cookie(response, request, COOKIE)
    return response
