"""``/healthz`` (the process answers) and ``/readyz`` (it can serve: database and schema)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tokenkeep.api.errors import error_response
from tokenkeep.api.responses import error_responses
from tokenkeep.errors import TokenkeepError

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:
    """Always 200 while the process runs; it checks nothing else on purpose."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and migrated",
    response_model=None,
    responses=error_responses(503),
)
async def readyz(request: Request) -> JSONResponse | dict[str, Any]:
    """200 when the database answers and its schema is this version's; 503 otherwise."""
    gateway = request.app.state.gateway
    try:
        db = gateway.store.db
        await db.ping()
        if not await db.schema_is_current():
            return error_response(
                503,
                "schema_outdated",
                "The database schema is not at this version's migration head: "
                "run 'tokenkeep db upgrade'.",
            )
    except TokenkeepError as exc:
        # /readyz needs no API key: the reason (which names the database host) goes to the
        # log, the response only says what is wrong.
        gateway.log.warning("not ready", error_code=exc.code, reason=exc.message)
        message = (
            "The database is unreachable."
            if exc.code == "database_unavailable"
            else "The gateway is not ready."
        )
        return error_response(503, exc.code, message)
    return {"status": "ready", "database": db.dialect}
