"""When to refresh and how often to retry: plain generators over values, no transport.

A direct-mode call goes: take the token (the one remembered, or the gateway's current one),
send, and if Salesforce answers that the session is dead (``401 INVALID_SESSION_ID``, or
``403 Bad_OAuth_Token`` on identity endpoints), renew the token and send again, **once**.
Renewing tells the gateway which token version was refused (``POST
/connections/{id}/refresh`` with ``rejected_version``): when another caller or process has
already replaced it, the gateway answers with that newer token and refreshes nothing; only
when it still holds the refused token does it refresh (its single-flight coordinator makes
concurrent refreshes one). The replay is never replayed.

What a refresh cannot fix is told to the gateway (``POST /connections/{id}/report``,
best-effort) instead of retried: the replay refused again (an IP lock, a session the org
kills...), a "renewed" token that is the very one just refused, and the ``INVALID_SESSION_ID``
variant no refresh fixes ("not valid for use with the REST API": API Client Control). And when
the org moved (the renewed token names another ``instance_url``), requests aimed at the
instance the connection used to have are moved onto the new one (:func:`aimed`), as
Salesforce's Mobile SDK does; a request to any other host is sent where it was going.

The drivers (``httpx`` sync and async auth flows, the ``requests`` hook) answer the steps
these generators yield; they never decide anything themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tokenkeep.client._models import Token

__all__ = [
    "Fetch",
    "Refresh",
    "Renew",
    "Report",
    "Send",
    "Step",
    "aimed",
    "call_flow",
    "origin",
    "renew_flow",
    "same_token",
    "session_rejected",
    "session_unusable",
    "wants_body",
]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Answer with the gateway's current token (``GET /connections/{id}/token``)."""


@dataclass(frozen=True, slots=True)
class Refresh:
    """Answer with a refreshed token (``POST /connections/{id}/refresh``).

    With ``rejected_version`` the gateway refreshes only if that version is still the
    stored one, and otherwise answers with the newer token another caller already got.
    """

    rejected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Renew:
    """Answer with a token newer than ``rejected`` (run :func:`renew_flow`)."""

    rejected: Token


@dataclass(frozen=True, slots=True)
class Send:
    """Send the request with ``token``; answer with ``(status, body)``.

    The body is only needed when :func:`wants_body` says so (``b""`` otherwise), so large
    successful downloads are never read by the auth layer.
    """

    token: Token


@dataclass(frozen=True, slots=True)
class Report:
    """Tell the gateway Salesforce refused ``token`` with ``(status, body)``; answer ``None``.

    Best-effort: a failed report never changes the caller's answer.
    """

    status: int
    body: bytes
    token: Token


Step = Fetch | Refresh | Renew | Report | Send

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, without a default port (``""`` if
    ``url`` has no host)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return ""
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin to compare
        return ""
    scheme = parts.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


def aimed(url: str, instance_url: str, former: Collection[str]) -> str:
    """``url`` moved onto ``instance_url`` when it points at a ``former`` instance origin.

    Only scheme, host and port change; path, query and fragment are kept. A URL on the
    current instance, or on any host that is not a former instance of this connection
    (another org, a login host), is returned unchanged: the token goes where the caller
    sent it, and a wrong host shows up as the refusal it is.
    """
    at = origin(url)
    to = origin(instance_url)
    if not at or not to or at == to or at not in former:
        return url
    target = urlsplit(to)
    parts = urlsplit(url)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


def wants_body(status: int) -> bool:
    """True when :func:`session_rejected` needs the response body to decide."""
    return status in (401, 403)


def session_rejected(status: int, body: bytes) -> bool:
    """Salesforce says the session is dead and a refresh may fix it.

    The answer is read by the gateway's one reader of Salesforce answers
    (:func:`tokenkeep.providers.salesforce_answers.read_api_answer`, the proxy's too):
    ``401`` with ``INVALID_SESSION_ID`` (not the "not valid for the REST API" variant,
    which a refresh does not fix) and the ``403 Bad_OAuth_Token`` of identity endpoints.
    """
    if not wants_body(status):
        return False
    # Imported here: the providers package loads the provider catalog (PyYAML), which an
    # SDK user should not pay for at import time, only on the first 401/403.
    from tokenkeep.providers.salesforce_answers import read_api_answer

    return read_api_answer(status, body).refresh_may_help


def session_unusable(status: int, body: bytes) -> bool:
    """Salesforce refused the session in a way a refresh does not fix (``401
    INVALID_SESSION_ID`` "not valid for use with the REST API": API Client Control, among
    others). Nothing to retry; worth a report."""
    if not wants_body(status):
        return False
    from tokenkeep.providers.salesforce_answers import AnswerKind, read_api_answer

    return read_api_answer(status, body).kind is AnswerKind.SESSION_UNUSABLE


def same_token(a: Token, b: Token) -> bool:
    """True when both carry the same access token (constant-time comparison)."""
    return a.access_token == b.access_token


def renew_flow(
    rejected: Token, remembered: Token | None
) -> Generator[Fetch | Refresh, Token, Token]:
    """A token newer than ``rejected``, refreshing only if the gateway still holds it."""
    if remembered is not None and not same_token(remembered, rejected):
        return remembered  # another call of this process already renewed it
    if rejected.version is not None:
        # One call: the gateway compares versions under its single-flight lock, so two
        # processes that saw the same dead token cause one refresh, not two.
        renewed: Token = yield Refresh(rejected_version=rejected.version)
        return renewed
    # A gateway that reports no version: compare tokens here (a small race remains).
    current = yield Fetch()
    if same_token(current, rejected):
        current = yield Refresh()
    return current


def call_flow(remembered: Token | None, *, replayable: bool = True) -> Generator[Step, Any, Token]:
    """One call: send with a token; on a dead session renew and send once more.

    The driver answers :class:`Fetch`, :class:`Refresh` and :class:`Renew` with a
    :class:`Token`, :class:`Send` with ``(status, body)`` and :class:`Report` with ``None``.
    Returns the token the call ended with (for the driver to remember). A request whose
    body was streamed (``replayable=False``) cannot be sent twice: the token is still
    renewed, so the caller's own retry (or next call) works, but the refusal is the answer.

    The replay's answer is the caller's answer whatever it is; when it is a dead session
    again, a refresh was not the fix, and the gateway is told (:class:`Report`). So it is
    when the gateway has nothing newer than the refused token (replaying a token known to
    be refused would only burn an API call), and when Salesforce refuses the session in a
    way no refresh fixes (:func:`session_unusable`: nothing is renewed or replayed).
    """
    token: Token = remembered if remembered is not None else (yield Fetch())
    status, body = yield Send(token)
    if not session_rejected(status, body):
        if session_unusable(status, body):
            yield Report(status, body, token)
        return token
    renewed: Token = yield Renew(token)
    if same_token(renewed, token):
        yield Report(status, body, token)
        return renewed
    if not replayable:
        return renewed
    status, body = yield Send(renewed)  # the one replay
    if session_rejected(status, body):
        yield Report(status, body, renewed)
    return renewed
