"""What a failed refresh means, and what to do next. Pure; every branch is table-tested.

The lifecycle calls :func:`classify_refresh_failure` after it has RE-READ the connection row
under its lease, so the facts it passes (did the refresh token change, had the previous
lease expired, ...) are current. The rules (shared/DESIGN.md, "Single-flight refresh"):

* ``invalid_grant`` with a changed refresh token is a race: another worker refreshed; use
  its token. Never a revocation.
* ``invalid_grant`` on the unchanged token is a confirmed revocation → ``needs_reauth``,
  with a sub-reason telling the user why (inactive user/org, password change, the 5-approval
  cap, a rotation lost by a crash, or plain expired/revoked).
* A refusal of the app itself (``invalid_client``, ``invalid_client_id``,
  ``invalid_app_access``), an IP/login-hours restriction, or a JWT/client-credentials set-up
  problem → ``action_required``: reconnecting will not help; an admin must act.
* Timeouts, connection errors, 5xx/429 → transient: retry with jittered exponential backoff;
  status ``error`` once ``attempts >= max_attempts`` (still retrying, more slowly). A
  transient fault NEVER yields ``needs_reauth``.
* ``invalid_grant`` / "token request is already being processed" is Salesforce's answer
  while another refresh of the same refresh token is in flight (another gateway, or our own
  earlier call that timed out): transient, retried after at least
  :data:`IN_PROGRESS_PAUSE` seconds; never a revocation.
* Any other refusal is not understood well enough to revoke a connection: treated like a
  transient fault (bounded by the same attempts), reason ``unrecognized``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError

__all__ = [
    "IN_PROGRESS",
    "IN_PROGRESS_PAUSE",
    "RefreshAction",
    "RefreshFailureDecision",
    "backoff_delay",
    "classify_refresh_failure",
    "is_in_progress_error",
]

RefreshAction = Literal["use_newer_token", "needs_reauth", "action_required", "retry", "error"]
FailureStatus = Literal["needs_reauth", "action_required", "error"]
EventType = Literal[
    "connection.needs_reauth", "connection.action_required", "connection.refresh_failed"
]

DEFAULT_BACKOFF_BASE = 2.0
DEFAULT_BACKOFF_CAP = 900.0


@dataclass(frozen=True, slots=True)
class RefreshFailureDecision:
    """The verdict on one failed refresh attempt.

    ``status`` is the connection status to store (None: leave it as it is); ``event`` the
    outbox event to write in the same transaction when the status changes; ``retry_after``
    the delay (seconds) before the next attempt, or None when no automatic retry makes sense.
    """

    action: RefreshAction
    status: FailureStatus | None
    reason: str
    sub_reason: str | None = None
    event: EventType | None = None
    retry_after: float | None = None
    detail: str | None = None


def backoff_delay(
    attempts: int,
    rng: random.Random,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    cap: float = DEFAULT_BACKOFF_CAP,
) -> float:
    """Exponential backoff with "equal jitter": between d/2 and d, d = min(cap, base·2^(n-1)).

    Half of the delay is fixed so a retry never comes back immediately; the other half is
    random so that many connections failing together (a token-endpoint outage) spread out.
    """
    exponent = max(0, attempts - 1)
    # Cap the exponent before exponentiating: 2**5000 would overflow a float.
    delay = min(cap, base * (2.0 ** min(exponent, 60)))
    return delay / 2 + rng.uniform(0.0, delay / 2)


#: The least pause (seconds) before retrying after "token request is already being processed":
#: the other request needs time to finish.
IN_PROGRESS_PAUSE = 2.0
#: The sub_reason of that answer (reason ``transient``).
IN_PROGRESS = "refresh_in_progress"
# invalid_grant descriptions of a refresh already in flight upstream: not a revocation.
_IN_PROGRESS_DESCRIPTIONS = ("already being processed",)


def is_in_progress_error(text: str | None) -> bool:
    """Is ``text`` (a stored ``last_error``) Salesforce's "token request is already being
    processed" answer?"""
    lowered = (text or "").lower()
    return "invalid_grant" in lowered and any(n in lowered for n in _IN_PROGRESS_DESCRIPTIONS)


# error_description → sub_reason, for invalid_grant (lower-cased substring match: the texts
# are stable in practice but their case and punctuation are not documented).
_REAUTH_DESCRIPTIONS: tuple[tuple[str, str], ...] = (
    ("inactive user", "inactive_user"),
    ("user is inactive", "inactive_user"),
    ("inactive_user", "inactive_user"),
    ("inactive org", "inactive_org"),
    ("organization is locked", "inactive_org"),
    ("inactive_org", "inactive_org"),
    ("authentication failure", "authentication_failure"),
)
# invalid_grant descriptions that are NOT revocations: an admin or the integration's
# configuration must change, reconnecting does not help.
# The reason (first word of ``status_reason``) is one of DESIGN.md's cause words where one
# applies (``ip_locked``, ``api_client_control``, ``wrong_instance``): the proxy passes it on
# as ``Tokenkeep-Cause``. Configuration faults are ``misconfigured`` (not a cause word: the
# proxy then says ``unknown``).
_ACTION_DESCRIPTIONS: tuple[tuple[str, str, str], ...] = (
    ("ip restricted", "ip_locked", "login_ip_restricted"),
    ("invalid login hours", "ip_locked", "login_ip_restricted"),
    ("hasn't approved this consumer", "api_client_control", "user_not_pre_authorized"),
    ("has not approved this consumer", "api_client_control", "user_not_pre_authorized"),
    ("audience validation failed", "misconfigured", "jwt_audience"),
    ("not supported on this domain", "misconfigured", "not_my_domain"),
    ("no client credentials user enabled", "misconfigured", "no_run_as_user"),
)
_APP_REFUSALS = {
    "invalid_client": ("misconfigured", "invalid_client"),
    "invalid_client_id": ("misconfigured", "invalid_client_id"),
    # "user is not admin approved to access this app": the app's access policy.
    "invalid_app_access": ("api_client_control", "app_not_approved"),
    "unsupported_grant_type": ("misconfigured", "unsupported_grant_type"),
    # Raised locally (IntegrationConfigError) before any request: fix the integration.
    "invalid_configuration": ("misconfigured", "invalid_configuration"),
}
_INACTIVE_ERRORS = {"inactive_user", "inactive_org"}


def classify_refresh_failure(
    error: OAuthError | UpstreamTransportError,
    *,
    refresh_token_changed: bool,
    lease_expired_before: bool,
    rotation_enabled: bool,
    newer_connection_same_user_app: bool,
    attempts: int,
    max_attempts: int,
    rng: random.Random | None = None,
    backoff_base: float = DEFAULT_BACKOFF_BASE,
    backoff_cap: float = DEFAULT_BACKOFF_CAP,
) -> RefreshFailureDecision:
    """Decide what one failed refresh means. See the module docstring for the rules.

    ``refresh_token_changed``: the re-read row holds a different refresh token (or version)
    than the one this attempt used. ``lease_expired_before``: when this attempt took the
    lease, the previous holder's lease had expired without a commit (a worker died).
    ``attempts`` counts consecutive failed attempts including this one.
    """
    rng = rng if rng is not None else random.Random()
    if isinstance(error, UpstreamTransportError):
        return _transient(
            "transient",
            error.kind,
            attempts=attempts,
            max_attempts=max_attempts,
            rng=rng,
            base=backoff_base,
            cap=backoff_cap,
            retry_hint=error.retry_after,
        )
    code = error.error
    description = (error.error_description or "").lower()

    if code == "invalid_grant" or code in _INACTIVE_ERRORS:
        if refresh_token_changed:
            # Someone else refreshed (and maybe rotated) between our read and our call.
            return RefreshFailureDecision(action="use_newer_token", status=None, reason="race")
        if code == "invalid_grant" and any(n in description for n in _IN_PROGRESS_DESCRIPTIONS):
            return _transient(
                "transient",
                IN_PROGRESS,
                attempts=attempts,
                max_attempts=max_attempts,
                rng=rng,
                base=backoff_base,
                cap=backoff_cap,
                retry_hint=IN_PROGRESS_PAUSE,
            )
        if code == "invalid_grant":
            for needle, reason, sub in _ACTION_DESCRIPTIONS:
                if needle in description:
                    return _action_required(reason, sub, error)
        return _needs_reauth(
            _reauth_sub_reason(
                code,
                description,
                rotation_enabled=rotation_enabled,
                lease_expired_before=lease_expired_before,
                newer_connection_same_user_app=newer_connection_same_user_app,
            ),
            error,
        )
    if code == "no_refresh_token":
        # Nothing to refresh with (an import without one, or a scope without refresh_token):
        # only a new connect flow helps.
        return RefreshFailureDecision(
            action="needs_reauth",
            status="needs_reauth",
            reason="no_refresh_token",
            event="connection.needs_reauth",
            detail=_detail(error),
        )
    if code in _APP_REFUSALS:
        reason, sub = _APP_REFUSALS[code]
        return _action_required(reason, sub, error)
    # A refusal we do not recognise (an odd 4xx, Bad_OAuth_Token from a proxy, ...): not
    # proof of a revocation, so retry within the same bounds as a transient fault.
    return _transient(
        "unrecognized",
        code,
        attempts=attempts,
        max_attempts=max_attempts,
        rng=rng,
        base=backoff_base,
        cap=backoff_cap,
    )


def _reauth_sub_reason(
    code: str,
    description: str,
    *,
    rotation_enabled: bool,
    lease_expired_before: bool,
    newer_connection_same_user_app: bool,
) -> str:
    # What the provider says explicitly wins over what we infer.
    if code in _INACTIVE_ERRORS:
        return code
    for needle, sub in _REAUTH_DESCRIPTIONS:
        if needle in description:
            return sub
    # "expired access/refresh token" covers several causes; infer the likeliest.
    if rotation_enabled and lease_expired_before:
        # A worker got a rotated token and died before committing it; the stored token
        # is now rotated out. Report it, never loop on it.
        return "rotation_lost"
    if newer_connection_same_user_app:
        return "token_cap_evicted"
    return "expired_or_revoked"


def _needs_reauth(sub_reason: str, error: OAuthError) -> RefreshFailureDecision:
    return RefreshFailureDecision(
        action="needs_reauth",
        status="needs_reauth",
        reason="revoked",
        sub_reason=sub_reason,
        event="connection.needs_reauth",
        detail=_detail(error),
    )


def _action_required(reason: str, sub_reason: str, error: OAuthError) -> RefreshFailureDecision:
    return RefreshFailureDecision(
        action="action_required",
        status="action_required",
        reason=reason,
        sub_reason=sub_reason,
        event="connection.action_required",
        detail=_detail(error),
    )


def _transient(
    reason: str,
    sub_reason: str,
    *,
    attempts: int,
    max_attempts: int,
    rng: random.Random,
    base: float,
    cap: float,
    retry_hint: float | None = None,
) -> RefreshFailureDecision:
    delay = backoff_delay(attempts, rng, base=base, cap=cap)
    if retry_hint is not None:
        # Honour the provider's Retry-After, within our cap.
        delay = max(delay, min(retry_hint, cap))
    if attempts >= max_attempts:
        return RefreshFailureDecision(
            action="error",
            status="error",
            reason=reason,
            sub_reason=sub_reason,
            event="connection.refresh_failed",
            retry_after=delay,
        )
    return RefreshFailureDecision(
        action="retry", status=None, reason=reason, sub_reason=sub_reason, retry_after=delay
    )


def _detail(error: OAuthError) -> str:
    text = error.error
    if error.error_description:
        text += f": {error.error_description}"
    return text
