"""FastAPI dependencies: the gateway of the app, and the API-key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tokenkeep.errors import UnauthorizedError
from tokenkeep.runtime import Gateway
from tokenkeep.store import Store
from tokenkeep.store.records import ApiKey

__all__ = [
    "GatewayDep",
    "StoreDep",
    "get_gateway",
    "get_store",
    "require_api_key",
    "verify_bearer",
]


def get_gateway(request: Request) -> Gateway:
    """The :class:`Gateway` this app was built for."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def get_store(request: Request) -> Store:
    """The gateway's open store (503 ``not_ready`` before start-up finished)."""
    return get_gateway(request).store


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
StoreDep = Annotated[Store, Depends(get_store)]


async def require_api_key(request: Request) -> ApiKey:
    """Accept ``Authorization: Bearer <api key>`` or answer 401 ``unauthorized``."""
    key = await verify_bearer(get_store(request), request.headers.get("authorization", ""))
    request.state.api_key_id = key.id
    return key


async def verify_bearer(store: Store, authorization: str) -> ApiKey:
    """The API key an ``Authorization`` header value carries (``Bearer <api key>``), or
    :class:`UnauthorizedError` (missing, not Bearer, unknown or revoked). The one check of
    the control API: FastAPI's dependency and the token fast path (token_fast.py)."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise UnauthorizedError(
            "Missing API key: send the header 'Authorization: Bearer <api key>'."
        )
    key = await store.api_keys.verify(credentials.strip())
    if key is None:
        raise UnauthorizedError("Invalid or revoked API key.")
    return key
