"""Rendering: the Jinja2 environment (autoescape on), page responses and their headers.

Templates and static files are package data (``templates/``, ``static/``), read through
:mod:`importlib.resources`, so they work from a wheel as from a checkout.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from tokenkeep.__about__ import __version__
from tokenkeep.api.dashboard import formatting as fmt
from tokenkeep.api.dashboard.session import CSRF_FIELD, PREFIX, Viewer
from tokenkeep.api.deps import get_gateway

__all__ = ["PAGE_HEADERS", "env", "error_page", "page", "render_fragment"]

#: Every dashboard answer: never cached, never framed, no inline script, no third party.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

env = Environment(
    loader=PackageLoader("tokenkeep.api.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.globals.update(
    prefix=PREFIX,
    version=__version__,
    csrf_field=CSRF_FIELD,
    duration=fmt.duration,
    clock_time=fmt.clock_time,
    count=fmt.count,
    status_label=fmt.status_label,
    plain_url=fmt.plain_url,
)


def _context(request: Request, viewer: Viewer | None, extra: dict[str, Any]) -> dict[str, Any]:
    now = get_gateway(request).clock.now()
    return {
        "request_path": request.url.path,
        "now": now,
        "rel": lambda when: fmt.relative(when, now),
        "csrf": viewer.csrf if viewer is not None else "",
        "logged_in": viewer is not None,
        "flash": None,
        "active": "",
        **extra,
    }


async def page(
    request: Request,
    template: str,
    viewer: Viewer | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A full page; shows (and clears) the session's flash message."""
    if viewer is not None and "flash" not in context:
        store = get_gateway(request).store
        context["flash"] = await store.dashboard_sessions.pop_flash(viewer.token)
    body = env.get_template(template).render(_context(request, viewer, context))
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def render_fragment(
    request: Request, template: str, viewer: Viewer | None, **context: Any
) -> HTMLResponse:
    """A piece of a page (an htmx swap): no flash, same headers."""
    body = env.get_template(template).render(_context(request, viewer, context))
    return HTMLResponse(body, headers=PAGE_HEADERS)


def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    """A plain page that says what went wrong (403, 404), with a way back."""
    body = env.get_template("error.html").render(
        _context(request, None, {"title": title, "message": message, "code": status_code})
    )
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)
