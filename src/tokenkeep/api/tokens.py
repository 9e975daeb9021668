"""Direct mode: ``GET /connections/{id}/token`` and ``POST /connections/{id}/refresh``.

Both go through the gateway's :class:`~tokenkeep.lifecycle.coordinator.RefreshCoordinator`,
so a caller here never starts a second refresh beside the scheduler, the proxy or another
gateway process. These are the only routes that answer with an access token, and only to a
holder of an API key; the answer is marked ``Cache-Control: no-store``.

``GET /token`` also records the caller's address as the connection's
``last_used_from_address`` (diagnosis compares it with ``issued_to_address`` to tell an
IP-locked session apart). Only a change is written: an in-process memo answers the usual
"same address as last time" without touching the database, and forgets after
``_ADDRESS_MEMO_SECONDS`` so a change seen by another gateway process is corrected soon.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tokenkeep.api.deps import GatewayDep
from tokenkeep.api.responses import BODY_ERRORS, error_responses
from tokenkeep.api.schemas import CONNECTION_ID_PATTERN
from tokenkeep.errors import TokenkeepError
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.runtime import Gateway

__all__ = ["TokenOut", "note_used_from", "router", "token_body", "used_from_memo"]

router = APIRouter(prefix="/connections", tags=["tokens"])

# How long a noted address is trusted without a database write, and how many connections
# the memo keeps (the oldest entry is dropped beyond that).
_ADDRESS_MEMO_SECONDS = 60.0
_ADDRESS_MEMO_SIZE = 10_000

_NO_STORE = {"Cache-Control": "no-store"}

IdPath = Annotated[str, Path(pattern=CONNECTION_ID_PATTERN, description="connection id")]


class TokenOut(BaseModel):
    """A usable access token (direct mode)."""

    connection_id: str
    org_id: str | None
    access_token: str
    instance_url: str
    expires_at: datetime | None = Field(
        description="tokenkeep's estimate of the expiry (introspection or session timeout)"
    )
    version: int = Field(
        description="the stored credentials' version: send it back as rejected_version "
        "when Salesforce refuses this token"
    )


class RefreshIn(BaseModel):
    """Optional body of ``POST /connections/{id}/refresh``."""

    model_config = ConfigDict(extra="forbid")

    rejected_version: int | None = Field(
        default=None,
        ge=0,
        description="the version of a token Salesforce just refused: refresh only if it is "
        "still the stored one, else answer with the newer token another caller got",
    )


def token_body(token: FreshToken) -> bytes:
    """The JSON of a ``TokenOut`` for ``token``, serialized once by pydantic's encoder."""
    return (
        TokenOut.model_construct(
            connection_id=token.connection_id,
            org_id=token.org_id or None,
            access_token=token.access_token.reveal(),
            instance_url=token.instance_url,
            expires_at=token.expires_at,
            version=token.version,
        )
        .model_dump_json()
        .encode()
    )


def _token_out(token: FreshToken) -> Response:
    """The answer, serialized once by pydantic's own encoder (the documented ``TokenOut``,
    without FastAPI's second validation pass of a returned model: the hot path of direct
    mode, docs/PERFORMANCE.md), marked ``no-store``."""
    body = token_body(token)
    return Response(body, media_type="application/json", headers=_NO_STORE)


class _UsedFrom:
    """The address each connection's token was last handed to, as this process noted it."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def fresh(self, connection_id: str, address: str, now: float) -> bool:
        """True when ``address`` was noted for ``connection_id`` within the memo's window."""
        seen = self._seen.get(connection_id)
        return seen is not None and seen[0] == address and now - seen[1] < _ADDRESS_MEMO_SECONDS

    def note(self, connection_id: str, address: str, now: float) -> None:
        self._seen[connection_id] = (address, now)
        self._seen.move_to_end(connection_id)
        while len(self._seen) > _ADDRESS_MEMO_SIZE:
            self._seen.popitem(last=False)


def used_from_memo(state: Any) -> _UsedFrom:
    """The address memo of the app whose ``state`` this is (one per control app, shared by
    the FastAPI route and the fast path of ``api/token_fast.py``)."""
    memo: _UsedFrom | None = getattr(state, "token_used_from", None)
    if memo is None:
        memo = state.token_used_from = _UsedFrom()
    return memo


async def note_used_from(
    gateway: Gateway, memo: _UsedFrom, connection_id: str, host: str | None
) -> None:
    """Record ``host`` as the connection's ``last_used_from_address`` unless the memo says
    it already is."""
    if not host:
        return
    now = gateway.clock.time()
    if memo.fresh(connection_id, host, now):
        return
    try:
        await gateway.store.connections.note_used_from(connection_id, host)
    except TokenkeepError as exc:
        # Bookkeeping for diagnosis: never the reason a caller goes without its token.
        gateway.log.warning(
            "token.used_from_not_recorded", connection_id=connection_id, error=exc.code
        )
        return
    memo.note(connection_id, host, now)


@router.get(
    "/{connection_id}/token",
    response_model=TokenOut,
    responses=error_responses(404, 409, 422, 424),
)
async def get_token(
    connection_id: IdPath,
    gateway: GatewayDep,
    request: Request,
    min_ttl: Annotated[
        float, Query(ge=0, le=3600, description="seconds the token must stay valid")
    ] = 60.0,
) -> Response:
    """A token valid for at least ``min_ttl`` seconds, refreshed first only if needed.

    409 ``needs_reauth`` (no upstream call) when the grant is gone, 424 ``action_required``
    when an org admin must act, 503 while the provider's token endpoint is failing.
    """
    token = await gateway.coordinator.fresh_token(connection_id, min_ttl=min_ttl)
    client = request.client
    memo = used_from_memo(request.app.state)
    await note_used_from(gateway, memo, connection_id, client.host if client else None)
    return _token_out(token)


@router.post(
    "/{connection_id}/refresh",
    response_model=TokenOut,
    responses={**BODY_ERRORS, **error_responses(404, 409, 424)},
)
async def refresh(
    connection_id: IdPath,
    gateway: GatewayDep,
    body: Annotated[RefreshIn | None, Body()] = None,
) -> Response:
    """Refresh now through the single flight (or after a rejection, only if still needed)."""
    coordinator = gateway.coordinator
    if body is not None and body.rejected_version is not None:
        await coordinator.refresh_after_rejection(connection_id, body.rejected_version)
        token = await coordinator.fresh_token(connection_id, min_ttl=0)
    else:
        token = await coordinator.refresh(connection_id)
    return _token_out(token)
