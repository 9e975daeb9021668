"""Where a webhook may be sent: http(s), and not into our own network.

A webhook URL is chosen by whoever holds an API key, and tokenkeep then makes requests to
it: a server-side request forgery vector. So the URL must be ``http://`` or ``https://``
and, unless ``TOKENKEEP_ALLOW_INSECURE_LOOPBACK`` is set (tests, a receiver on the same
host), every address its host resolves to must be public: not loopback, private,
link-local (cloud metadata at 169.254.169.254), multicast, reserved or unspecified. It is
checked when the endpoint is created and again before every delivery (DNS answers
change), and the sender's resolver (:class:`GuardedResolver`) refuses such addresses at
connect time too, so a name that resolves differently a moment later cannot slip through.

(``tokenkeep.urls.upstream_url_problem`` is the rule for *token* destinations -- https or
loopback only -- which a webhook target, plain http to a public host allowed, is not.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["GuardedResolver", "address_problem", "url_problem", "webhook_target_problem"]

_NOT_PUBLIC = "resolves to a non-public address"


def address_problem(address: str) -> str | None:
    """Why ``address`` (an IP) may not receive webhooks, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return f"{_NOT_PUBLIC} ({ip})"
    return None


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """The checks that need no DNS: scheme, host, and a literal IP host's address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in {"http", "https"}:
        return "must be an http:// or https:// URL"
    host = parts.hostname
    if not host:
        return "must name a host"
    if port == 0:
        return "has an invalid port"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{_NOT_PUBLIC} (localhost)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    problem = address_problem(host)
    return f"host {problem}" if problem else None


async def webhook_target_problem(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` may not receive webhooks now (a phrase), or None when it may."""
    problem = url_problem(url, allow_private=allow_private)
    if problem is not None or allow_private:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return None  # a literal address: checked above
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"host does not resolve ({type(exc).__name__})"
    for info in infos:
        problem = address_problem(str(info[4][0]))
        if problem is not None:
            return f"host {problem}"
    return None if infos else "host does not resolve"


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, minus the addresses :func:`address_problem` refuses.

    aiohttp connects to one of the addresses this returns, so the check and the connection
    use the same DNS answer. (Literal IP hosts do not pass through a resolver: the sender
    checks them with :func:`url_problem` first.)
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        public = [r for r in results if address_problem(r["host"]) is None]
        if not public:
            raise OSError(f"{host} {_NOT_PUBLIC}: refused as a webhook target")
        return public

    async def close(self) -> None:
        await self._inner.close()
