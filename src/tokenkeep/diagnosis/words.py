"""The words an admin reads: each cause's fix, and the revocation sub-reasons."""

from __future__ import annotations

from tokenkeep.vocabulary import Cause

__all__ = ["FIXES", "REVOKED_DETAIL"]

FIXES: dict[Cause, str] = {
    Cause.EXPIRED: (
        "Nothing to do: the session had expired; tokenkeep refreshed it and retried once."
    ),
    Cause.WRONG_INSTANCE: (
        "The org answers on another host than the connection's instance_url (My Domain "
        "change or instance move). tokenkeep refreshes once to learn the right host; if "
        "Salesforce still points at the wrong one, reconnect the user (a connect link) so the "
        "login returns the org's current instance URL."
    ),
    Cause.IP_LOCKED: (
        'In Salesforce Setup > Session Settings, turn off "Lock sessions to the IP address '
        'from which they originated", or send all traffic for this org from one egress '
        "address (TOKENKEEP_EGRESS_ADDRESS, and direct-mode clients through the proxy)."
    ),
    Cause.API_CLIENT_CONTROL: (
        "API Access Control is on and this connected app is not allowed: in Setup > Connected "
        "Apps OAuth Usage, install the app org-wide, or in Manage Connected Apps set 'Admin "
        "approved users are pre-authorized' and assign the users' profiles or permission sets."
    ),
    Cause.REVOKED: (
        "The user's grant is gone (password change, deactivation, app revoked, or the "
        "5-token cap): send the user a connect link (POST /connect/sessions) to reconnect."
    ),
    Cause.MAINTENANCE: (
        "Salesforce is in maintenance (read-only) for this org: reads flow, writes are paused "
        "and resume by themselves when it ends. Nothing to do."
    ),
    Cause.UNKNOWN: (
        "tokenkeep could not prove a cause from what it saw (below). Try POST "
        "/connections/{id}/diagnose again; if it persists, check the org's session settings."
    ),
}

REVOKED_DETAIL = {
    "inactive_user": "the user was deactivated",
    "inactive_org": "the org is locked or inactive",
    "authentication_failure": "the user's credentials changed",
    "token_cap_evicted": "a newer grant of the same user and app evicted it (the 5-token cap)",
    "rotation_lost": "a rotated refresh token was lost by a crash",
    "expired_or_revoked": (
        "revoked or expired: a password change, the app revoked, or the refresh-token policy"
    ),
}
