"""The forwarding proxy: a raw ASGI app in front of each connection's Salesforce instance.

Public surface: :class:`ProxyApp` (the ASGI callable), the :class:`TokenSource` protocol it
needs from the lifecycle layer, and :class:`FreshToken`. Modules:

* ``paths``: route and validate ``/proxy/{path}`` + ``Connection-Id`` and ``/c/{id}/{path}``;
  build the upstream URL from the stored ``instance_url`` only.
* ``headers``: request/response header hygiene.
* ``retry``: the retry-once policy (pure).
* ``write_pause``: the per-org write pause during maintenance (pure state machine).
* ``upstream``: the shared aiohttp session.
* ``app``: the ASGI transport that moves the bytes.
* ``wiring``: ``create_proxy_app(gateway)``, the seam ``tokenkeep.server`` mounts.
"""

from tokenkeep.proxy.app import LimitInfo, ProxyApp, UpstreamTimeoutError, UpstreamUnreachableError
from tokenkeep.proxy.source import FreshToken, TokenSource
from tokenkeep.proxy.wiring import create_proxy_app

__all__ = [
    "FreshToken",
    "LimitInfo",
    "ProxyApp",
    "TokenSource",
    "UpstreamTimeoutError",
    "UpstreamUnreachableError",
    "create_proxy_app",
]
