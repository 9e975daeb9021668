"""The lifecycle's writes: what a refresh answer or a failed attempt changes, in one commit.

* :func:`commit_refresh` is THE write of the product's first principle ("never lose a
  refresh token"): it stores a token response with the store's compare-and-swap on
  ``version`` (:meth:`~tokenkeep.store.refresh_state.RefreshStateRepository.commit_tokens`),
  which also releases the lease, and writes the outbox events of any transition
  (``recovered``, ``instance_moved``, ``action_required``) and the operation-log entry --
  all in one transaction. It runs right after the token response arrives; nothing is
  awaited in between.
* :func:`record_failure` stores the verdict of
  :func:`~tokenkeep.oauth.classify.classify_refresh_failure` (status, reason, backoff) with
  its outbox event, in one transaction.

This module decides WHAT is written (statuses, reasons, events); the store owns HOW.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.oauth.classify import RefreshFailureDecision
from tokenkeep.oauth.models import TokenResponse
from tokenkeep.secret import Secret
from tokenkeep.store import Store
from tokenkeep.store.records import Connection
from tokenkeep.urls import upstream_url_problem
from tokenkeep.vocabulary import Cause, EventType, Reason, Status

__all__ = ["CommitResult", "commit_refresh", "record_failure", "status_reason_of"]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What :func:`commit_refresh` stored (``committed`` False: the version had moved)."""

    committed: bool
    version: int
    instance_moved: bool = False
    recovered: bool = False
    # Tokens stored, but an org admin must act (``status_reason`` names why).
    action_required: str | None = None


# A refresh answer whose signature does not verify with the stored client secret: the
# tokens are kept (never lose a refresh token), the integration is probably misconfigured.
SIGNATURE_MISMATCH = "misconfigured:signature_mismatch"
# A refresh answer named an instance_url tokens may not be sent to (plain http).
INSECURE_INSTANCE_URL = "wrong_instance:insecure_instance_url"


def status_reason_of(decision: RefreshFailureDecision) -> str:
    """``reason:sub_reason`` (e.g. ``revoked:inactive_user``): the stored ``status_reason``."""
    return str(Reason(decision.reason, decision.sub_reason or None))


async def commit_refresh(
    store: Store,
    conn: Connection,
    response: TokenResponse,
    *,
    used_refresh_token: Secret | None,
    owner: str,
    expires_at: datetime,
    next_refresh_at: datetime,
    duration_ms: float,
    grant: str,
    allow_insecure_loopback: bool = False,
) -> CommitResult:
    """Compare-and-swap the new tokens onto the row read at ``conn.version``.

    The refresh token kept is the rotated one when the response has one, else the one used.
    Both ciphertexts are rewritten under the primary key so ``key_id`` stays truthful.
    An ``instance_url`` that may not receive tokens (plain http, unless loopback and
    ``allow_insecure_loopback``) is not taken: the tokens are still stored (never lose a
    refresh token), the old URL stays, and the row becomes ``action_required``
    (``wrong_instance:insecure_instance_url``).
    """
    now = store.clock.now()
    refresh = response.refresh_token or used_refresh_token
    new_version = conn.version + 1
    refused_url = response.instance_url and upstream_url_problem(
        response.instance_url, allow_insecure_loopback=allow_insecure_loopback
    )
    instance_moved = (
        bool(response.instance_url)
        and not refused_url
        and response.instance_url != conn.instance_url
    )
    recovered = conn.status == Status.ERROR
    columns: dict[str, Any] = {
        "instance_url": response.instance_url or conn.instance_url,
        "issued_at": utc_from_timestamp(response.received_at),
        "expires_at": expires_at,
        "next_refresh_at": next_refresh_at,
        "status": Status.ACTIVE.value,
        "status_reason": None,
        "refresh_attempts": 0,
        "last_error": None,
        "last_refresh_at": now,
    }
    if response.local_address:
        columns["issued_to_address"] = response.local_address
    if response.id_url:
        columns["id_url"] = response.id_url
    if refused_url:
        columns.update(
            instance_url=conn.instance_url,
            status=Status.ACTION_REQUIRED.value,
            status_reason=INSECURE_INSTANCE_URL,
            next_refresh_at=None,  # nothing to retry on its own
            last_error=f"the token endpoint named instance_url {response.instance_url!r}, "
            f"which {refused_url}",
        )
    if response.signature_mismatch:
        # Reported, not fatal: the connection stays usable (see parse_token_response).
        columns["last_error"] = (
            "the token answer's signature does not verify with the integration's client "
            "secret: is the stored client_secret right?"
        )
    async with store.db.write() as session:
        written = await store.refresh_state.commit_tokens(
            session,
            conn,
            access_token=response.access_token,
            refresh_token=refresh,
            columns=columns,
        )
        if not written:
            # Fenced off: a newer token is stored. Give our lease back if we still hold it.
            await store.leases.release(conn.id, owner, session=session)
            await store.operations.log(
                "refresh",
                outcome="fenced",
                connection_id=conn.id,
                org_id=conn.org_id,
                duration_ms=duration_ms,
                detail={"grant": grant, "read_version": conn.version},
                session=session,
            )
            return CommitResult(committed=False, version=conn.version)
        payload = {"connection_id": conn.id, "org_id": conn.org_id, "version": new_version}
        if instance_moved:
            store.outbox.add_event(
                session,
                EventType.CONNECTION_INSTANCE_MOVED,
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={
                    **payload,
                    "old_instance_url": conn.instance_url,
                    "instance_url": response.instance_url,
                },
            )
        if recovered:
            store.outbox.add_event(
                session,
                EventType.CONNECTION_RECOVERED,
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={**payload, "previous_status": conn.status},
            )
        if refused_url:
            store.outbox.add_event(
                session,
                EventType.CONNECTION_ACTION_REQUIRED,
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={
                    **payload,
                    "status": Status.ACTION_REQUIRED.value,
                    "reason": INSECURE_INSTANCE_URL,
                    "detail": f"refused instance_url {response.instance_url!r}",
                },
            )
        if response.signature_mismatch:
            store.outbox.add_event(
                session,
                EventType.CONNECTION_ACTION_REQUIRED,
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={
                    **payload,
                    "status": Status.ACTIVE.value,
                    "reason": SIGNATURE_MISMATCH,
                    "detail": "the integration's client_secret is probably wrong",
                },
            )
        if columns["status"] != conn.status:
            store.operations.status_changed(
                session,
                conn.id,
                conn.org_id,
                previous=conn.status,
                status=columns["status"],
                reason=columns["status_reason"],
                by="refresh",
            )
        await store.operations.log(
            "refresh",
            outcome="ok",
            connection_id=conn.id,
            org_id=conn.org_id,
            duration_ms=duration_ms,
            detail={
                "grant": grant,
                "version": new_version,
                # Fingerprints (sha256 prefixes) tell tokens apart; the tokens never appear.
                "access_token_fp": response.access_token.fingerprint,
                "refresh_token_fp": refresh.fingerprint if refresh is not None else None,
                "rotated": response.refresh_token is not None,
                "instance_moved": instance_moved,
                "signature_mismatch": response.signature_mismatch,
            },
            session=session,
        )
    return CommitResult(
        committed=True,
        version=new_version,
        instance_moved=instance_moved,
        recovered=recovered and not refused_url,
        action_required=INSECURE_INSTANCE_URL if refused_url else None,
    )


async def record_failure(
    store: Store,
    conn: Connection,
    decision: RefreshFailureDecision,
    *,
    owner: str,
    attempts: int,
    retry_at: datetime | None,
    duration_ms: float,
    grant: str,
    error_text: str,
) -> bool:
    """Store a failed attempt's verdict (fenced by ``conn.version``) and release the lease.

    A status change writes its outbox event in the same transaction. Returns False when the
    row moved on meanwhile (a newer token: the failure is stale and nothing is written).
    """
    columns: dict[str, Any] = {"refresh_attempts": attempts, "last_error": error_text[:500]}
    if decision.status is not None:
        columns["status"] = decision.status
        columns["status_reason"] = status_reason_of(decision)
    if retry_at is not None:
        columns["next_refresh_at"] = retry_at
    elif decision.status in (Status.NEEDS_REAUTH, Status.ACTION_REQUIRED):
        # Nothing to retry on its own: keep the scheduler away from this row.
        columns["next_refresh_at"] = None
    async with store.db.write() as session:
        previous = await store.refresh_state.store_failure(session, conn, columns)
        if previous is None:
            await store.leases.release(conn.id, owner, session=session)
            return False
        changed = decision.status is not None and decision.status != previous
        if changed and decision.status is not None:
            store.operations.status_changed(
                session,
                conn.id,
                conn.org_id,
                previous=previous,
                status=decision.status,
                reason=columns.get("status_reason"),
                by="refresh",
            )
        if changed and decision.event is not None:
            store.outbox.add_event(
                session,
                decision.event,
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={
                    "connection_id": conn.id,
                    "org_id": conn.org_id,
                    "status": decision.status,
                    "reason": decision.reason,
                    "sub_reason": decision.sub_reason,
                    "detail": decision.detail,
                    "attempts": attempts,
                },
            )
        await store.operations.log(
            "refresh",
            outcome=decision.action,
            connection_id=conn.id,
            org_id=conn.org_id,
            cause=Cause.REVOKED.value if decision.status == Status.NEEDS_REAUTH else None,
            duration_ms=duration_ms,
            detail={
                "grant": grant,
                "reason": decision.reason,
                "sub_reason": decision.sub_reason,
                "attempts": attempts,
                "error": error_text[:300],
            },
            session=session,
        )
    return True
