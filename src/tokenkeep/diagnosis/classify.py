"""The cause classifier: from what was seen to ``{cause, confidence, evidence, fix, status}``.

Pure and table-tested (``tests/diagnosis/test_classify.py``): the probes
(:mod:`tokenkeep.diagnosis.probes`) and the proxy gather the facts, this module only
reasons. Salesforce answers six different problems with one ``401 INVALID_SESSION_ID``;
what tells them apart (shared/PRODUCT.md, shared/SALESFORCE.md):

========================  ===================================================================
cause                     the evidence that proves it
========================  ===================================================================
``revoked``               the refresh answered ``invalid_grant`` on the refresh token we hold
                          (a changed token is a race, never a revocation)
``maintenance``           ``INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE``, or the org's
                          writes are paused / many of its connections failed at once
``wrong_instance``        ``URL_NOT_RESET``, or the refresh answered another ``instance_url``
``api_client_control``    a fresh token works for identity, data calls answer "This session is
                          not valid for use with the REST API" even from its own address
``ip_locked``             the refused token is still alive (introspection ``active``, or it
                          works from the address that obtained it), and it was used from
                          another address
``expired``               the refused token is dead, a fresh one works from the same address on
                          the same host
========================  ===================================================================

False positives are the enemy: a cause is asserted only with the evidence that proves it;
otherwise the verdict is ``unknown`` with what was seen. ``confidence`` is ``high`` when the
proof is direct, ``medium`` when it is the likeliest reading of strong hints (the status is
then left alone), ``low`` for ``unknown``.
"""

from __future__ import annotations

from tokenkeep.diagnosis.evidence import (
    ORG_BURST,
    Confidence,
    Diagnosis,
    Evidence,
    Fact,
    RefreshResult,
    host_of,
    message_unusable,
    observations,
)
from tokenkeep.diagnosis.words import FIXES, REVOKED_DETAIL
from tokenkeep.providers.salesforce_answers import MAINTENANCE_CODE
from tokenkeep.vocabulary import Cause, Reason, Status

__all__ = [
    "ORG_BURST",
    "Confidence",
    "Diagnosis",
    "Evidence",
    "Fact",
    "RefreshResult",
    "classify",
    "host_of",
    "message_unusable",
]


def classify(e: Evidence) -> Diagnosis:
    """The verdict for one body of evidence (see the module docstring for the rules)."""
    facts = observations(e)
    if e.refresh is RefreshResult.REVOKED:
        reason = _reason(e.refresh_reason, Cause.REVOKED)
        why = REVOKED_DETAIL.get(reason.detail or "", "revoked")
        return Diagnosis(
            Cause.REVOKED,
            Confidence.HIGH,
            (*facts, Fact("revocation", reason.detail, f"Salesforce refused the refresh: {why}.")),
            FIXES[Cause.REVOKED],
            Status.NEEDS_REAUTH,
            reason,
        )
    if e.refresh is RefreshResult.ACTION_REQUIRED:
        reason = _reason(e.refresh_reason, Cause.UNKNOWN)
        cause = reason.cause or Cause.UNKNOWN
        return Diagnosis(
            cause,
            Confidence.HIGH,
            facts,
            FIXES.get(cause, FIXES[Cause.UNKNOWN]),
            Status.ACTION_REQUIRED,
            reason,
        )
    maintenance = _maintenance(e)
    if maintenance is not None:
        return Diagnosis(
            Cause.MAINTENANCE,
            Confidence.HIGH
            if MAINTENANCE_CODE in (e.error_code, e.replay_error_code)
            else Confidence.MEDIUM,
            (*facts, maintenance),
            FIXES[Cause.MAINTENANCE],
            None,
            Reason(Cause.MAINTENANCE),
            recovered=bool(e.replay_ok),
        )
    if e.refresh is RefreshResult.TRANSIENT:
        return _unknown(
            (
                *facts,
                Fact(
                    "refresh",
                    "transient",
                    "Salesforce's token endpoint did not answer the refresh (an outage, not a "
                    "revocation); tokenkeep retries with backoff.",
                ),
            )
        )
    wrong = _wrong_instance(e, facts)
    if wrong is not None:
        return wrong
    if e.replay_unusable or (e.refresh is None and message_unusable(e.message)):
        return _api_client_control(e, facts)
    locked = _ip_locked(e, facts)
    if locked is not None:
        return locked
    if e.replay_ok and e.refresh is RefreshResult.OK:
        return _expired(e, facts)
    if e.refresh is RefreshResult.OK and e.replay_ok is None and e.status == 401:
        # Refreshed, not replayed (a streamed body): the likeliest reading, not a proof.
        return Diagnosis(
            Cause.EXPIRED,
            Confidence.MEDIUM,
            (
                *facts,
                Fact(
                    "replay",
                    None,
                    "The token was refreshed for the next call; this call's body was streamed "
                    "and could not be replayed.",
                ),
            ),
            FIXES[Cause.EXPIRED],
            None,
            Reason(Cause.EXPIRED),
        )
    if e.replay_ok and e.refresh is None and e.status is None:
        return Diagnosis(
            None,
            Confidence.HIGH,
            (*facts, Fact("data_call", "ok", "A data call with the current token works.")),
            "Nothing to do: the connection works.",
            recovered=True,
        )
    return _unknown(facts)


def _reason(text: str | None, default: Cause) -> Reason:
    return Reason.parse(text) or Reason(default)


def _maintenance(e: Evidence) -> Fact | None:
    if MAINTENANCE_CODE in (e.error_code, e.replay_error_code):
        return Fact(
            "error_code",
            MAINTENANCE_CODE,
            "Salesforce refused a write because the org is in maintenance (read-only).",
        )
    if e.org_writes_paused:
        return Fact(
            "org_writes_paused",
            True,
            "The org is in maintenance: its writes are paused; sessions may flip meanwhile.",
        )
    if e.org_recent_session_errors >= ORG_BURST:
        return Fact(
            "org_session_errors",
            e.org_recent_session_errors,
            f"{e.org_recent_session_errors} other connections of this org had their session "
            "refused within a minute: an org-wide event (maintenance), not this token's age.",
        )
    return None


def _wrong_instance(e: Evidence, facts: tuple[Fact, ...]) -> Diagnosis | None:
    called, stored, new = (
        host_of(e.host),
        host_of(e.instance_url),
        host_of(e.refreshed_instance_url),
    )
    moved = new is not None and stored is not None and new != stored
    off_host = called is not None and stored is not None and called != stored
    if e.error_code != "URL_NOT_RESET" and not moved and not off_host:
        return None
    hosts = Fact(
        "hosts",
        {"called": called, "instance_url": stored, "refreshed_instance_url": new},
        f"The call went to {called or stored}; Salesforce's token answer names "
        f"{new or 'the same host'} as the org's instance.",
    )
    # Still refused as the wrong host after the refresh named the org's instance: only a
    # reconnect (or an admin) fixes it.
    named_same = e.refresh is RefreshResult.OK and not moved and not e.replay_ok
    if e.replay_wrong_host or (e.error_code == "URL_NOT_RESET" and named_same):
        return Diagnosis(
            Cause.WRONG_INSTANCE,
            Confidence.HIGH,
            (*facts, hosts),
            FIXES[Cause.WRONG_INSTANCE],
            Status.ACTION_REQUIRED,
            Reason(Cause.WRONG_INSTANCE, "url_not_reset"),
        )
    if e.replay_ok and (moved or e.error_code == "URL_NOT_RESET"):
        return Diagnosis(
            Cause.WRONG_INSTANCE,
            Confidence.HIGH,
            (*facts, hosts),
            "Nothing to do: the refresh returned the org's current instance URL and tokenkeep "
            "now uses it.",
            None,
            Reason(Cause.WRONG_INSTANCE, "instance_moved"),
            recovered=True,
        )
    if e.error_code == "URL_NOT_RESET":
        return Diagnosis(
            Cause.WRONG_INSTANCE,
            Confidence.MEDIUM,
            (*facts, hosts),
            FIXES[Cause.WRONG_INSTANCE],
            None,
            Reason(Cause.WRONG_INSTANCE),
        )
    return None


def _api_client_control(e: Evidence, facts: tuple[Fact, ...]) -> Diagnosis:
    same_address = (
        e.issued_to_address is None
        or e.used_from_address is None
        or e.issued_to_address == e.used_from_address
    )
    fact = Fact(
        "api_access",
        "not valid for use with the REST API",
        "OAuth and refresh work"
        + (", identity answers" if e.identity_ok else "")
        + ", but data calls fail even from the address that obtained the token: "
        '"This session is not valid for use with the REST API".',
    )
    proven_here = (
        e.issued_to_address is not None and e.issued_to_address == e.used_from_address
    ) or e.refresh is RefreshResult.OK
    if e.identity_ok and same_address and proven_here:
        return Diagnosis(
            Cause.API_CLIENT_CONTROL,
            Confidence.HIGH,
            (*facts, fact),
            FIXES[Cause.API_CLIENT_CONTROL],
            Status.ACTION_REQUIRED,
            Reason(Cause.API_CLIENT_CONTROL, "not_allowed"),
        )
    return Diagnosis(
        Cause.API_CLIENT_CONTROL,
        Confidence.MEDIUM,
        (*facts, fact),
        FIXES[Cause.API_CLIENT_CONTROL],
        None,
        Reason(Cause.API_CLIENT_CONTROL),
    )


def _ip_locked(e: Evidence, facts: tuple[Fact, ...]) -> Diagnosis | None:
    if (
        e.issued_to_address is None
        or e.used_from_address is None
        or e.issued_to_address == e.used_from_address
    ):
        return None
    alive = e.works_from_origin is True or e.refused_token_active is True
    if not alive:
        return None  # a dead token refused anywhere proves nothing about a lock
    how = (
        "works from the address that obtained it"
        if e.works_from_origin
        else "is still active (introspection)"
    )
    fact = Fact(
        "addresses",
        {"obtained_from": e.issued_to_address, "used_from": e.used_from_address},
        f"The token was obtained from {e.issued_to_address} and refused from "
        f"{e.used_from_address}, yet it {how}: the org locks sessions to their IP address.",
    )
    return Diagnosis(
        Cause.IP_LOCKED,
        Confidence.HIGH,
        (*facts, fact),
        FIXES[Cause.IP_LOCKED],
        Status.ACTION_REQUIRED,
        Reason(Cause.IP_LOCKED, "session_ip_locked"),
        recovered=bool(e.replay_ok),
    )


def _expired(e: Evidence, facts: tuple[Fact, ...]) -> Diagnosis:
    age, expected = e.token_age_seconds, e.expected_lifetime_seconds
    early = age is not None and expected is not None and age < expected * 0.9
    if e.refused_token_active is True:
        # Dead from here, alive at Salesforce, same address: not an expiry we can name.
        return _unknown(
            (
                *facts,
                Fact(
                    "refused_token_active",
                    True,
                    "The refused token is still active at Salesforce, yet a fresh one works.",
                ),
            )
        )
    says = "A fresh token from the same address works: the old session had ended."
    if early and age is not None:
        says = (
            f"The session ended after {round(age)} s, before its expected lifetime "
            f"({round(expected or 0)} s): it expired early or an admin removed it; a fresh "
            "token works."
        )
    return Diagnosis(
        Cause.EXPIRED,
        Confidence.MEDIUM if early else Confidence.HIGH,
        (*facts, Fact("replay", "ok", says)),
        FIXES[Cause.EXPIRED],
        None,
        Reason(Cause.EXPIRED),
        recovered=True,
    )


def _unknown(facts: tuple[Fact, ...]) -> Diagnosis:
    return Diagnosis(Cause.UNKNOWN, Confidence.LOW, facts, FIXES[Cause.UNKNOWN])
