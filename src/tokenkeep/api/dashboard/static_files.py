"""``GET /dashboard/static/{name}``: the CSS, the small page script and the vendored htmx.

Read from the installed package (:mod:`importlib.resources`), once per process. Public (the
login page needs its CSS); ``Cache-Control`` lets the browser keep them for a day, and the
pages link them with ``?v=<version>`` so an upgrade is fetched at once.

``htmx.min.js`` is htmx 2.0.11 from the npm registry (``htmx.org``), licence 0BSD.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Path
from fastapi.responses import Response

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_TYPES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "htmx.min.js": "text/javascript; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("tokenkeep.api.dashboard").joinpath("static", name).read_bytes()


@router.get("/static/{name}")
async def static_file(name: str = Path(max_length=40)) -> Response:
    """One of the files above; 404 for anything else."""
    media_type = _TYPES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        _read(name),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
