"""The probes: the few Salesforce calls that gather a diagnosis's evidence.

Each probe is one call and answers None when it could not tell (the host unreachable, no
client secret to introspect with): the classifier then simply knows less. Used only
after a failure (by the proxy's retry-once, ``POST /connections/{id}/report``) or on
demand (``POST /connections/{id}/diagnose``), never on a healthy call:

* :meth:`Probes.data_call` — the provider's ``probe_path`` (Salesforce: ``GET
  /services/data/v60.0/limits``) with a token, optionally from another local address
  (the address that obtained the token: "does it work from there?");
* :meth:`Probes.identity` — ``/services/oauth2/userinfo`` with a token (API Access Control
  lets OAuth endpoints answer while data calls fail);
* :meth:`Probes.introspect_active` — is a refused token still active at Salesforce? (an
  expired or killed session is not; an IP-locked one is).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import NotFoundError
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.models import OAuthApp
from tokenkeep.oauth.session import create_session
from tokenkeep.observability.logging import get_logger
from tokenkeep.providers.catalog import get_provider
from tokenkeep.providers.salesforce_answers import ApiAnswer, read_api_answer
from tokenkeep.secret import Secret

__all__ = ["DataCall", "Probes", "is_local_address"]

_log = get_logger("tokenkeep.diagnosis")


@dataclass(frozen=True, slots=True)
class DataCall:
    """A data-call probe's reading and the local address it left from."""

    answer: ApiAnswer
    local_address: str | None

    @property
    def ok(self) -> bool:
        return self.answer.status < 400


def is_local_address(address: str) -> bool:
    """True when this machine can send from ``address`` (bind succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


class Probes:
    """Probe calls through the gateway's token-endpoint client (its egress address)."""

    def __init__(self, client: TokenEndpointClient, settings: Settings, clock: Clock) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock

    async def data_call(
        self,
        instance_url: str,
        token: Secret,
        *,
        provider: str,
        from_address: str | None = None,
    ) -> DataCall | None:
        """One data call with ``token``; from ``from_address`` when given (None when that
        address is not one of this machine's, or the host cannot be reached)."""
        url = instance_url.rstrip("/") + _probe_path(provider)
        if from_address is None:
            return await self._data_call(self.client, url, token)
        if not is_local_address(from_address):
            return None
        http = create_session(
            egress_address=from_address,
            ca_bundle=self.settings.ca_bundle,
            timeout_seconds=self.settings.upstream_timeout_seconds,
            connect_timeout_seconds=self.settings.upstream_connect_timeout_seconds,
        )
        try:
            return await self._data_call(TokenEndpointClient(http, clock=self.clock), url, token)
        finally:
            await http.close()

    async def _data_call(
        self, client: TokenEndpointClient, url: str, token: Secret
    ) -> DataCall | None:
        try:
            answer = await client.probe(url, token)
        except (UpstreamTransportError, OAuthError) as exc:
            _log.info("diagnosis.probe_failed", probe="data_call", error=str(exc))
            return None
        return DataCall(read_api_answer(answer.status, answer.head), answer.local_address)

    async def identity(self, app: OAuthApp, token: Secret) -> bool | None:
        """Does ``token`` work for userinfo? (None: could not tell.)"""
        try:
            await self.client.userinfo(app, token)
        except OAuthError:
            return False
        except UpstreamTransportError:  # 5xx, timeout: cannot tell
            return None
        return True

    async def introspect_active(self, app: OAuthApp, token: Secret) -> bool | None:
        """Is ``token`` still active at the provider? (None: cannot introspect.)"""
        if not app.client_secret:
            return None
        try:
            return await self.client.introspect(app, token) is not None
        except (OAuthError, UpstreamTransportError) as exc:
            _log.info("diagnosis.probe_failed", probe="introspect", error=str(exc))
            return None


def _probe_path(provider: str) -> str:
    try:
        return get_provider(provider).probe_path
    except NotFoundError:  # a provider the catalog does not know: the instance's root
        return "/"
