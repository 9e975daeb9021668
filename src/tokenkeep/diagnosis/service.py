"""The diagnosis service: gather the evidence of an auth failure and classify it.

Three entry points, one pipeline (evidence → :func:`~tokenkeep.diagnosis.classify.classify`
→ :meth:`DiagnosisEffects.apply <tokenkeep.diagnosis.effects.DiagnosisEffects.apply>`):

* :meth:`Diagnoser.settle` — the proxy, after its retry-once, with what it saw (the first
  answer, the refresh, the replay, the local address). Cheap when the story is plain (an
  expired token, refreshed, replay accepted, the same address and host: no probe at all);
  one introspection of the refused token when it died early or was used from another
  address; one identity call when data calls say "not valid for use with the REST API".
* :meth:`Diagnoser.diagnose` — ``POST /connections/{id}/diagnose``: probe now.
* :meth:`Diagnoser.report` — ``POST /connections/{id}/report``: a direct-mode client's
  failed answer and the address it called from.

Acting on the verdict (status, event, log row, learned timeout) is
:mod:`tokenkeep.diagnosis.effects`'s.

The service also stands in for the coordinator as the proxy's token source (``token_for``,
``cached_token``, ``refresh_after_rejection`` are the coordinator's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.diagnosis.classify import classify
from tokenkeep.diagnosis.effects import DiagnosisEffects
from tokenkeep.diagnosis.evidence import (
    REFUSED,
    Diagnosis,
    Evidence,
    ProxiedFailure,
    RefreshResult,
    addresses_differ,
    evidence_of,
    host_of,
    message_unusable,
    with_refresh,
    with_replay_answer,
)
from tokenkeep.diagnosis.probes import Probes
from tokenkeep.errors import (
    ActionRequiredError,
    NeedsReauthError,
    TokenkeepError,
)
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer, read_api_answer
from tokenkeep.store import Connection, Store
from tokenkeep.vocabulary import Cause, Status

__all__ = ["Diagnoser", "OrgSignals", "ProxiedFailure", "Verdict", "evidence_of"]


class OrgSignals(Protocol):
    """What org health tells the diagnosis (every gateway's view)."""

    def is_paused(self, org_key: str) -> bool:
        """Are the org's writes paused (maintenance)?"""
        ...

    def failing_connections(
        self, org_id: str, *, seconds: float = 60.0, exclude: str | None = None
    ) -> int:
        """Other connections of the org whose session was refused within ``seconds``."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """The cause word the call is labelled with, and the full diagnosis when one ran."""

    cause: Cause | None
    diagnosis: Diagnosis | None = None


class Diagnoser:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        coordinator: RefreshCoordinator,
        probes: Probes,
        *,
        settings: Settings,
        clock: Clock,
        org_signals: OrgSignals | None = None,
    ) -> None:
        self.store = store
        self.coordinator = coordinator
        self.probes = probes
        self.settings = settings
        self.clock = clock
        self.org_signals = org_signals
        self._effects = DiagnosisEffects(store, coordinator)

    # -- the proxy's token source --------------------------------------------------------
    async def token_for(self, connection_id: str) -> FreshToken:
        return await self.coordinator.token_for(connection_id)

    def cached_token(self, connection_id: str) -> FreshToken | None:
        return self.coordinator.cached_token(connection_id)

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        return await self.coordinator.refresh_after_rejection(connection_id, rejected_version)

    # -- entry points --------------------------------------------------------------------
    async def settle(self, failure: ProxiedFailure) -> Verdict:
        """Name the cause of a proxied call's auth failure and act on it (see module)."""
        first, rejected = failure.first, failure.rejected
        rejection = (
            self.coordinator.take_rejection(failure.connection_id, rejected.version)
            if failure.refreshed
            else None
        )
        conn_then = rejection.connection if rejection is not None else None
        evidence = await self._context(
            evidence_of(failure), conn_then, rejected.org_id, failure.connection_id
        )
        if failure.refresh_error is not None and not isinstance(
            failure.refresh_error, NeedsReauthError | ActionRequiredError
        ):
            # The token endpoint is failing: nothing else to learn now, and no status change.
            return Verdict(Cause.UNKNOWN, classify(evidence))
        evidence = await self._probe_after_proxy(failure, evidence)
        diagnosis = classify(evidence)
        await self._effects.apply(
            failure.connection_id,
            rejected.org_id,
            diagnosis,
            evidence,
            rejection=rejection,
            status_code=(failure.replay or first).status,
        )
        return Verdict(diagnosis.cause, diagnosis)

    async def diagnose(self, connection_id: str) -> tuple[Connection, Diagnosis]:
        """``POST /connections/{id}/diagnose``: probe the connection now and act on it."""
        conn = await self.store.connections.get(connection_id, with_credentials=True)
        return await self._investigate(conn, reported=None, used_from=None, host=None)

    async def report(
        self,
        connection_id: str,
        *,
        status: int,
        body: str,
        host: str | None,
        address: str | None,
        version: int | None = None,
    ) -> tuple[Connection, Diagnosis]:
        """``POST /connections/{id}/report``: a direct-mode client's failed answer."""
        conn = await self.store.connections.get(connection_id, with_credentials=True)
        answer = read_api_answer(status, body.encode("utf-8", "replace")[:16_384])
        if version is not None and version != conn.version:
            # An older token than the stored one failed: the client should simply fetch
            # the current token; the stored one is what we diagnose.
            answer = replace(answer, kind=AnswerKind.OK)
        return await self._investigate(conn, reported=answer, used_from=address, host=host)

    # -- the pipeline --------------------------------------------------------------------
    async def _investigate(
        self,
        conn: Connection,
        *,
        reported: ApiAnswer | None,
        used_from: str | None,
        host: str | None,
    ) -> tuple[Connection, Diagnosis]:
        if conn.credentials is None:
            raise TokenkeepError(f"connection {conn.id} has no stored token")
        app = await self.coordinator.oauth_app(conn.integration_key)
        token = conn.credentials.access_token
        here = await self.probes.data_call(conn.instance_url, token, provider=app.provider)
        base = Evidence(
            host=host_of(host) or host_of(conn.instance_url),
            instance_url=conn.instance_url,
            issued_to_address=conn.issued_to_address,
            used_from_address=used_from or (here.local_address if here else None),
        )
        base = await self._context(base, conn, conn.org_id, conn.id)
        failed: ApiAnswer | None = reported if reported and reported.kind in REFUSED else None
        if failed is None and here is not None and not here.ok:
            failed = here.answer
        if failed is not None:
            base = replace(
                base, status=failed.status, error_code=failed.error_code, message=failed.message
            )
        if conn.status in (Status.NEEDS_REAUTH, Status.ACTION_REQUIRED) and not (here and here.ok):
            # Already broken: report the stored verdict with what the probe sees now.
            result = (
                RefreshResult.REVOKED
                if conn.status == Status.NEEDS_REAUTH
                else RefreshResult.ACTION_REQUIRED
            )
            diagnosis = classify(replace(base, refresh=result, refresh_reason=conn.status_reason))
            await self._effects.apply(conn.id, conn.org_id, diagnosis, base, rejection=None)
            return conn, diagnosis
        if failed is None:
            if here is None:
                diagnosis = classify(base)  # unknown: the instance cannot be reached
            elif reported is not None and reported.kind is not AnswerKind.OK:
                diagnosis = classify(
                    replace(base, status=reported.status, error_code=reported.error_code)
                )
            else:
                diagnosis = classify(replace(base, replay_ok=True))
            await self._effects.apply(conn.id, conn.org_id, diagnosis, base, rejection=None)
            return conn, diagnosis
        evidence = base
        if (
            here is not None
            and here.ok
            and used_from is not None
            and used_from != here.local_address
        ):
            # The client's refusal, our success with the same token from the address that
            # obtained it: the lock is proven without any refresh.
            evidence = replace(evidence, works_from_origin=True)
            diagnosis = classify(evidence)
            await self._effects.apply(conn.id, conn.org_id, diagnosis, evidence, rejection=None)
            return conn, diagnosis
        evidence = replace(
            evidence, refused_token_active=await self.probes.introspect_active(app, token)
        )
        if failed.kind is AnswerKind.SESSION_UNUSABLE or message_unusable(failed.message):
            evidence = replace(evidence, identity_ok=await self.probes.identity(app, token))
        # Refused "not valid for use with the REST API" from the very address that obtained
        # the token: API Client Control is proven without a refresh.
        unusable_here = (
            here is not None
            and here.answer.kind is AnswerKind.SESSION_UNUSABLE
            and conn.issued_to_address is not None
            and conn.issued_to_address == here.local_address
        )
        if unusable_here and here is not None:
            evidence = replace(evidence, replay_unusable=True, used_from_address=here.local_address)
        elif conn.status in (Status.ACTIVE, Status.ERROR):
            evidence = await self._refresh_and_probe(conn, evidence, app.provider)
        diagnosis = classify(evidence)
        await self._effects.apply(conn.id, conn.org_id, diagnosis, evidence, rejection=None)
        refreshed = await self.store.connections.get(conn.id)
        return refreshed, diagnosis

    async def _refresh_and_probe(
        self, conn: Connection, evidence: Evidence, provider: str
    ) -> Evidence:
        """Refresh (single flight) and send the probe again with the fresh token."""
        try:
            fresh = await self.coordinator.refresh_after_rejection(conn.id, conn.version)
        except TokenkeepError as exc:
            return with_refresh(evidence, exc)
        evidence = replace(
            evidence, refresh=RefreshResult.OK, refreshed_instance_url=fresh.instance_url
        )
        again = await self.probes.data_call(
            fresh.instance_url, fresh.access_token, provider=provider
        )
        if again is None:
            return evidence
        evidence = with_replay_answer(evidence, again.answer)
        if again.answer.kind is AnswerKind.SESSION_UNUSABLE and evidence.identity_ok is None:
            app = await self.coordinator.oauth_app(conn.integration_key)
            evidence = replace(
                evidence, identity_ok=await self.probes.identity(app, fresh.access_token)
            )
        return evidence

    async def _probe_after_proxy(self, failure: ProxiedFailure, evidence: Evidence) -> Evidence:
        """The probes the proxy's story needs (none for a plain expiry)."""
        rejected, first = failure.rejected, failure.first
        app = await self.coordinator.oauth_app(await self._integration_key(rejected))
        if first.kind is AnswerKind.SESSION_UNUSABLE and not failure.refreshed:
            evidence = replace(
                evidence,
                replay_unusable=True,
                identity_ok=await self.probes.identity(app, rejected.access_token),
            )
            if not (
                rejected.issued_to_address is not None
                and rejected.issued_to_address == failure.local_address
            ):
                # Not proven from the address that obtained it: get a token here, try again.
                conn = await self.store.connections.get(rejected.connection_id)
                evidence = await self._refresh_and_probe(conn, evidence, app.provider)
            return evidence
        if not evidence.replay_ok:
            return evidence
        early = (
            evidence.token_age_seconds is not None
            and evidence.expected_lifetime_seconds is not None
            and evidence.token_age_seconds < 0.9 * evidence.expected_lifetime_seconds
        )
        moved = addresses_differ(evidence)
        if early or moved:
            evidence = replace(
                evidence,
                refused_token_active=await self.probes.introspect_active(
                    app, rejected.access_token
                ),
            )
        return evidence

    # -- facts -----------------------------------------------------------------------------
    async def _context(
        self,
        evidence: Evidence,
        conn: Connection | None,
        org_id: str | None,
        connection_id: str,
    ) -> Evidence:
        """Add the refused token's age (from the row as it was) and the org's signals."""
        if conn is not None and conn.issued_at is not None:
            issued = conn.issued_at.timestamp()
            evidence = replace(
                evidence,
                token_age_seconds=self.clock.time() - issued,
                expected_lifetime_seconds=(
                    conn.expires_at.timestamp() - issued if conn.expires_at else None
                ),
            )
        signals = self.org_signals
        if signals is None or not org_id:
            return evidence
        return replace(
            evidence,
            org_writes_paused=signals.is_paused(org_id),
            org_recent_session_errors=signals.failing_connections(
                org_id, seconds=60.0, exclude=connection_id
            ),
        )

    async def _integration_key(self, token: FreshToken) -> str:
        key = token.integration_key
        if key:
            return key
        return (await self.store.connections.get(token.connection_id)).integration_key
