"""``simple_salesforce(client, connection_id)``: a real ``simple_salesforce.Salesforce``
bound to a tokenkeep connection.

simple-salesforce keeps only the host and port of ``instance_url`` and always builds
``https://host:port/services/...`` URLs (shared/SALESFORCE.md, "Observed client
behaviour"); it cannot be given a base path or a scheme. So the helper hands it a
``requests.Session`` with a transport adapter mounted on exactly that ``https://host:port/``
prefix, which rewrites each URL onto the real base before sending:

* **proxy** mode (default): the base is ``<gateway>/c/<connection_id>`` and the session id
  is the API key; the gateway injects the token, refreshes and retries.
* **direct** mode: the base is the connection's current ``instance_url`` (an ``http://``
  emulator works too, and an instance move is followed) and the token comes from the
  gateway through :class:`~tokenkeep.client.TokenkeepRequestsAuth`, which renews a dead
  session and replays the call once. When the renewed token names a new instance (the org
  moved), the replay goes there, and the ``Salesforce`` object's own URLs (``sf_instance``,
  ``base_url``, ``apex_url``, ``bulk_url``...) are rebuilt on the new host, with an adapter
  mounted for it; URLs built before the move still reach the current instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from tokenkeep.client._auth import TokenkeepRequestsAuth
from tokenkeep.client._client import Client
from tokenkeep.errors import ConfigError

if TYPE_CHECKING:
    from simple_salesforce import Salesforce

__all__ = ["RebaseAdapter", "simple_salesforce"]


class RebaseAdapter(HTTPAdapter):
    """Sends requests for ``prefix`` (``https://host:port/``) to ``target()`` instead.

    ``https://host:port/services/x?q`` becomes ``<target>/services/x?q``; the path and
    query are kept byte for byte. A URL already under the target's path is left alone, so
    a replayed request is not rebased twice.
    """

    def __init__(self, prefix: str, target: Callable[[], str]) -> None:
        super().__init__()
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._target = target

    def rebase(self, url: str) -> str:
        """The URL the request really goes to."""
        if not url.startswith(self.prefix):
            return url
        base = self._target().rstrip("/")
        rest = url[len(self.prefix) - 1 :]  # keeps the leading "/"
        base_path = urlsplit(base).path
        if base_path and rest.startswith(base_path + "/"):
            rest = rest[len(base_path) :]
        return base + rest

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        """Rebase the URL (on a copy: the caller's request is not changed), then send."""
        url = self.rebase(request.url or "")
        if url != request.url:
            request = request.copy()
            request.url = url
        return super().send(request, **kwargs)


def _sf_instance(instance_url: str) -> str:
    # What simple-salesforce keeps of an instance URL: host, and the port unless 443.
    parts = urlsplit(instance_url)
    host = parts.hostname or ""
    return host if parts.port in (None, 443) else f"{host}:{parts.port}"


def _move(
    sf: Salesforce, http: requests.Session, instance_url: str, target: Callable[[], str]
) -> None:
    """Point ``sf``'s URLs at ``instance_url`` (as its constructor builds them)."""
    instance = _sf_instance(instance_url)
    if not instance or instance == sf.sf_instance:
        return
    prefix = f"https://{instance}/"
    http.mount(prefix, RebaseAdapter(prefix, target))
    version = sf.sf_version
    sf.sf_instance = instance
    sf.base_url = f"https://{instance}/services/data/v{version}/"
    sf.apex_url = f"https://{instance}/services/apexrest/"
    sf.bulk_url = f"https://{instance}/services/async/{version}/"
    sf.bulk2_url = f"https://{instance}/services/data/v{version}/jobs/"
    sf.metadata_url = f"https://{instance}/services/Soap/m/{version}/"
    sf.tooling_url = f"{sf.base_url}tooling/"
    sf.oauth2_url = f"https://{instance}/services/oauth2/"
    sf._mdapi = None  # built from the old URLs on first use


def _salesforce_class() -> type[Salesforce]:
    try:
        from simple_salesforce import Salesforce
    except ImportError as exc:
        raise ConfigError(
            "tokenkeep.client.simple_salesforce needs the simple-salesforce package: "
            "pip install 'tokenkeep[simple-salesforce]'."
        ) from exc
    return Salesforce


def simple_salesforce(
    client: Client,
    connection_id: str,
    *,
    mode: Literal["proxy", "direct"] = "proxy",
    version: str | None = None,
    session: requests.Session | None = None,
) -> Salesforce:
    """A ``simple_salesforce.Salesforce`` for ``connection_id``.

    ``mode="proxy"`` sends every call through the gateway (``/c/<id>``): tokens never leave
    it. ``mode="direct"`` fetches the token from the gateway and calls Salesforce itself,
    renewing an expired session transparently (one replay). ``version`` is the API version
    (simple-salesforce's default otherwise). ``session`` lets you bring your own
    ``requests.Session`` (TLS settings, proxies); the helper mounts its adapter on it.

    Raises :class:`~tokenkeep.errors.ConfigError` when simple-salesforce is not installed,
    and the SDK's typed errors when the gateway refuses (e.g. ``NeedsReauthError``).
    """
    salesforce = _salesforce_class()
    http = session if session is not None else requests.Session()
    options: dict[str, Any] = {"session": http}
    if version is not None:
        options["version"] = version.removeprefix("v")
    target: Callable[[], str]
    if mode == "proxy":
        sf = salesforce(instance_url=client.base_url, session_id=client.api_key.reveal(), **options)
        proxy_base = client.proxy_url(connection_id)

        def target() -> str:
            return proxy_base

    elif mode == "direct":
        auth = TokenkeepRequestsAuth(client, connection_id)
        first = auth.prime()
        sf = salesforce(
            instance_url=first.instance_url, session_id=first.access_token.reveal(), **options
        )
        # The session's auth wins over the header simple-salesforce sets from session_id
        # (requests applies auth last), so every call carries the current token.
        http.auth = auth

        def target() -> str:
            return (auth.token or first).instance_url

        auth.on_instance_url(lambda instance_url: _move(sf, http, instance_url, target))

    else:
        raise ValueError(f"mode must be 'proxy' or 'direct', not {mode!r}")
    http.mount(f"https://{sf.sf_instance}/", RebaseAdapter(f"https://{sf.sf_instance}/", target))
    return sf
