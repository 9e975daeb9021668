"""The lifecycle's writes: each one a single short transaction, fenced by ``version``.

* :func:`commit_refresh` is THE write of the product's first principle ("never lose a
  refresh token"): it stores a token response with a compare-and-swap on ``version``,
  releases the lease, and writes the outbox events of any transition (``recovered``,
  ``instance_moved``) and the operation-log entry -- all in one commit. It runs right
  after the token response arrives; nothing is awaited in between.
* :func:`record_failure` stores the verdict of
  :func:`~tokenkeep.oauth.classify.classify_refresh_failure` (status, reason, backoff) with
  its outbox event, in one commit.
* :func:`update_expiry` refines ``expires_at`` after introspection (guarded by the version
  it refines, so it never touches a newer token's row).

These write the :class:`~tokenkeep.store.models.ConnectionRow` columns directly (the
store's ``update_credentials`` cannot share a transaction with the outbox and the lease).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.oauth.classify import RefreshFailureDecision
from tokenkeep.oauth.models import TokenResponse
from tokenkeep.secret import Secret, fingerprint
from tokenkeep.store import Store
from tokenkeep.store.connections import ACCESS_TOKEN_FIELD, REFRESH_TOKEN_FIELD
from tokenkeep.store.models import ConnectionRow
from tokenkeep.store.records import Connection
from tokenkeep.urls import upstream_url_problem

__all__ = ["CommitResult", "commit_refresh", "record_failure", "status_reason_of", "update_expiry"]

_T = cast(Table, ConnectionRow.__table__)


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
    if decision.sub_reason:
        return f"{decision.reason}:{decision.sub_reason}"[:50]
    return decision.reason[:50]


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
    keyring = store.keyring
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
    recovered = conn.status == "error"
    values: dict[str, Any] = {
        "access_token_enc": keyring.encrypt(
            response.access_token.reveal(), row_id=conn.id, field=ACCESS_TOKEN_FIELD
        ),
        "refresh_token_enc": (
            keyring.encrypt(refresh.reveal(), row_id=conn.id, field=REFRESH_TOKEN_FIELD)
            if refresh is not None
            else None
        ),
        "refresh_token_fingerprint": fingerprint(refresh.reveal()) if refresh else None,
        "key_id": keyring.primary_key_id,
        "version": new_version,
        "instance_url": response.instance_url or conn.instance_url,
        "issued_at": utc_from_timestamp(response.received_at),
        "expires_at": expires_at,
        "next_refresh_at": next_refresh_at,
        "status": "active",
        "status_reason": None,
        "refresh_attempts": 0,
        "last_error": None,
        "last_refresh_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_until": None,
    }
    if response.local_address:
        values["issued_to_address"] = response.local_address
    if response.id_url:
        values["id_url"] = response.id_url
    if refused_url:
        values.update(
            instance_url=conn.instance_url,
            status="action_required",
            status_reason=INSECURE_INSTANCE_URL,
            next_refresh_at=None,  # nothing to retry on its own
            last_error=f"the token endpoint named instance_url {response.instance_url!r}, "
            f"which {refused_url}",
        )
    if response.signature_mismatch:
        # Reported, not fatal: the connection stays usable (see parse_token_response).
        values["last_error"] = (
            "the token answer's signature does not verify with the integration's client "
            "secret: is the stored client_secret right?"
        )
    async with store.db.write() as session:
        result = await session.execute(
            update(_T).where(_T.c.id == conn.id, _T.c.version == conn.version).values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            # Fenced off: a newer token is stored. Give our lease back if we still hold it.
            await session.execute(
                update(_T)
                .where(_T.c.id == conn.id, _T.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
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
                "connection.instance_moved",
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
                "connection.recovered",
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={**payload, "previous_status": conn.status},
            )
        if refused_url:
            store.outbox.add_event(
                session,
                "connection.action_required",
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={
                    **payload,
                    "status": "action_required",
                    "reason": INSECURE_INSTANCE_URL,
                    "detail": f"refused instance_url {response.instance_url!r}",
                },
            )
        if response.signature_mismatch:
            store.outbox.add_event(
                session,
                "connection.action_required",
                connection_id=conn.id,
                org_id=conn.org_id,
                payload={
                    **payload,
                    "status": "active",
                    "reason": SIGNATURE_MISMATCH,
                    "detail": "the integration's client_secret is probably wrong",
                },
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
    now = store.clock.now()
    values: dict[str, Any] = {
        "refresh_attempts": attempts,
        "last_error": error_text[:500],
        "updated_at": now,
        "lease_owner": None,
        "lease_until": None,
    }
    if decision.status is not None:
        values["status"] = decision.status
        values["status_reason"] = status_reason_of(decision)
    if retry_at is not None:
        values["next_refresh_at"] = retry_at
    elif decision.status in ("needs_reauth", "action_required"):
        # Nothing to retry on its own: keep the scheduler away from this row.
        values["next_refresh_at"] = None
    async with store.db.write() as session:
        current = (
            await session.execute(
                select(_T.c.status).where(_T.c.id == conn.id, _T.c.version == conn.version)
            )
        ).one_or_none()
        if current is None:
            await session.execute(
                update(_T)
                .where(_T.c.id == conn.id, _T.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )
            return False
        await session.execute(
            update(_T).where(_T.c.id == conn.id, _T.c.version == conn.version).values(**values)
        )
        changed = decision.status is not None and decision.status != current.status
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
            cause="revoked" if decision.status == "needs_reauth" else None,
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


async def update_expiry(
    store: Store,
    connection_id: str,
    version: int,
    *,
    expires_at: datetime,
    next_refresh_at: datetime,
) -> bool:
    """Refine the expiry of the token stored at ``version`` (no-op if it was replaced)."""
    async with store.db.write() as session:
        result = await session.execute(
            update(_T)
            .where(_T.c.id == connection_id, _T.c.version == version)
            .values(expires_at=expires_at, next_refresh_at=next_refresh_at)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
