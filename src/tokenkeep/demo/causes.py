"""The six causes of ``INVALID_SESSION_ID``, one step each, told apart end to end.

Each step sets its cause up with the emulator's admin API (as an org admin, or Salesforce,
would), makes the call that fails, and checks three things: what the caller got (status,
``Tokenkeep-Cause``), what tokenkeep concluded (its API's verdict: cause, confidence,
evidence, fix, the connection's status), and what reached Salesforce (the emulator's
request log: the refused call, refresh grants, calls that must not have happened).

Three orgs keep the steps independent: acme shows ``expired`` then ``revoked``; initech
``wrong_instance`` then ``ip_locked``; globex ``maintenance`` then ``api_client_control``
(which its admin then fixes, so the demo ends with one connection of each status).
"""

from __future__ import annotations

import socket

import httpx

from tokenkeep.demo.results import CauseShown, StepSkipped, StepSpec, duration, error_code, expect
from tokenkeep.demo.steps import DATA, QUERY, Tour

__all__ = ["WORKER_ADDRESS", "CauseTour"]

#: The direct-mode worker's own loopback address (the gateway's is 127.0.0.1).
WORKER_ADDRESS = "127.0.0.3"
MAINTENANCE_CODE = "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"


class CauseTour(Tour):
    """The whole tour: the first steps of :class:`Tour`, then one step per cause."""

    def steps(self) -> list[StepSpec]:
        return [
            StepSpec("Register the connected app", self.register, required=True),
            StepSpec(
                "Connect three orgs through the hosted connect flow",
                self.connect_all,
                required=True,
            ),
            StepSpec("Send proxied calls", self.traffic),
            StepSpec("Two hours pass: every session is renewed before use", self.renewal),
            StepSpec(
                "A session dies earlier than expected (cause: expired)",
                self.expired,
                cause="expired",
            ),
            StepSpec(
                "An org moves to another instance (cause: wrong_instance)",
                self.wrong_instance,
                cause="wrong_instance",
            ),
            StepSpec(
                "An org goes into maintenance (cause: maintenance)",
                self.maintenance,
                cause="maintenance",
            ),
            StepSpec(
                "An org locks sessions to their IP address (cause: ip_locked)",
                self.ip_locked,
                cause="ip_locked",
            ),
            StepSpec(
                "An org turns on API Client Control (cause: api_client_control)",
                self.api_client_control,
                cause="api_client_control",
            ),
            StepSpec(
                "A user changes their password (cause: revoked)", self.revoked, cause="revoked"
            ),
        ]

    async def expired(self) -> CauseShown:
        org = self.org("acme")
        self.emu.admin.patch_org(org.org_id, session_timeout_seconds=900)
        self.advance(16 * 60)
        before, since = self.grants(org_id=org.org_id), self.now()
        answer = await self.query("acme")
        refreshes = self.grants(org_id=org.org_id) - before
        upstream = len(self.data_calls(org.org_id, since))
        expect(answer.status_code == 200, "the call after the early session death", answer)
        _expect_cause(answer, "expired")
        expect(refreshes == 1, f"{refreshes} refresh grants instead of exactly one")
        expect(upstream == 2, f"{upstream} calls reached Salesforce instead of 2 (401, replay)")
        failing = self.failing_call(since, "the gateway", status=401)
        verdict = await self.logged_verdict("acme")
        _expect_verdict(verdict.cause == "expired" and verdict.status == "active", verdict)
        learned = (await self.http.get(f"/orgs/{org.org_id}")).json().get("session_timeout", {})
        seconds = learned.get("seconds")
        expect(bool(seconds) and seconds < 7200, f"no shorter session timeout learned: {seconds}")
        return CauseShown(
            "acme",
            setup=[
                "acme's admin cut the org's session timeout to 15 min; 16 min later the "
                "gateway still holds the token it expects to live 2 h"
            ],
            failing=failing,
            answer=f"200, Tokenkeep-Cause: expired (1 refresh grant, {upstream} upstream "
            "calls: the 401 and the replay)",
            verdict=verdict,
            after=[f"tokenkeep learned acme's session timeout: {duration(seconds)}"],
            codes="401 → 200",
            did=f"refresh + replay; learned a {duration(seconds)} timeout",
            status=verdict.status,
        )

    async def wrong_instance(self) -> CauseShown:
        org = self.org("initech")
        old = org.instance_url
        before, since = self.grants(org_id=org.org_id), self.now()
        self.emu.admin.patch_org(org.org_id, instance_url="new")
        new = self.org("initech").instance_url
        answer = await self.query("initech")
        expect(answer.status_code == 200, "the call after the instance move", answer)
        _expect_cause(answer, "wrong_instance")
        # The old host belongs to no org any more: its log rows carry no org id.
        failing = self.failing_call(since, f"the gateway, to the old host {old}", host=old)
        stored = await self.connection("initech")
        expect(stored.get("instance_url") == new, f"initech still points at {old}")
        again = await self.query("initech")
        refreshes = self.grants(org_id=org.org_id) - before
        expect(again.status_code == 200, "the next call", again)
        expect("tokenkeep-cause" not in again.headers, "the next call still failed first", again)
        expect(refreshes == 1, f"{refreshes} refresh grants instead of exactly one")
        verdict = await self.logged_verdict("initech")
        _expect_verdict(verdict.cause == "wrong_instance" and verdict.status == "active", verdict)
        return CauseShown(
            "initech",
            setup=[f"Salesforce moved initech to another instance: {old} → {new}"],
            failing=failing,
            answer="200, Tokenkeep-Cause: wrong_instance (the refresh named the new host; "
            "the call was replayed there)",
            verdict=verdict,
            after=[
                f"initech's instance_url is now {new}: the next call → 200 straight away "
                f"({refreshes} refresh grant in all)"
            ],
            codes="401 → 200",
            did="one refresh learned the new host; replayed",
            status=verdict.status,
        )

    async def maintenance(self) -> CauseShown:
        org = self.org("globex")
        since = self.now()
        self.emu.admin.patch_org(org.org_id, read_only=True)
        try:
            failed = await self.create("globex", "During maintenance")
            expect(failed.status_code >= 400, "a write during maintenance", failed)
            expect(error_code(failed) == MAINTENANCE_CODE, "the failed write", failed)
            _expect_cause(failed, "maintenance")
            await self.write_pause_settled(org.org_id, paused=True)
            calls_before = len(self.data_calls(org.org_id))
            paused = await self.create("globex", "During maintenance, again")
            code, retry_after = error_code(paused), paused.headers.get("retry-after")
            expect(paused.status_code == 503 and code == "org_write_paused", "next write", paused)
            expect(bool(retry_after), "the paused write has no Retry-After", paused)
            _expect_cause(paused, "maintenance")
            expect(len(self.data_calls(org.org_id)) == calls_before, "the paused write went out")
            read = await self.query("globex")
            expect(read.status_code == 200, "a read during maintenance", read)
            verdict = await self.asked_verdict("globex", "diagnose")
            _expect_verdict(verdict.cause == "maintenance" and verdict.status == "active", verdict)
        finally:
            self.emu.admin.patch_org(org.org_id, read_only=False)
        failing = self.failing_call(since, "the gateway", errorCode=MAINTENANCE_CODE)
        probe_after = float(self.env.gateway.settings.write_pause_probe_seconds)
        self.advance(probe_after + 1)
        resumed = await self.create("globex", "After maintenance")
        expect(resumed.status_code == 201, "the probe write after maintenance", resumed)
        await self.write_pause_settled(org.org_id, paused=False)
        return CauseShown(
            "globex",
            setup=["globex went read-only (a Salesforce maintenance)"],
            failing=failing,
            answer=f"{failed.status_code} with Tokenkeep-Cause: maintenance; the next write "
            f"got 503 org_write_paused (Retry-After: {retry_after}) without reaching "
            "Salesforce; reads still got 200",
            verdict=verdict,
            after=[
                f"maintenance ended; {duration(probe_after)} later one probe write went "
                "through (201) and writes resumed by themselves"
            ],
            codes=f"{failed.status_code} → 503 + Retry-After",
            did="paused writes, reads flow; resumed by itself",
            status=verdict.status,
        )

    async def ip_locked(self) -> CauseShown:
        if not _can_bind(WORKER_ADDRESS):
            raise StepSkipped(
                f"this machine cannot bind {WORKER_ADDRESS}, the worker's own address"
            )
        org = self.org("initech")
        self.emu.admin.patch_org(org.org_id, lock_sessions_to_ip=True)
        before, since = self.grants(org_id=org.org_id), self.now()
        transport = httpx.AsyncHTTPTransport(local_address=WORKER_ADDRESS)
        async with httpx.AsyncClient(
            transport=transport,
            base_url=self.env.base_url,
            headers=self.http.headers,
            timeout=self.http.timeout,
        ) as worker:
            got = await worker.get("/connections/initech/token")
            expect(got.status_code == 200, "the worker's GET /connections/initech/token", got)
            token = got.json()
            direct = await worker.get(
                f"{token['instance_url']}{DATA}/query",
                params={"q": QUERY},
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )
            expect(direct.status_code == 401, "the worker's direct call", direct)
            verdict = await self.asked_verdict(
                "initech",
                "report",
                json={
                    "status": direct.status_code,
                    "body": direct.text,
                    "host": token["instance_url"],
                    "address": WORKER_ADDRESS,
                    "version": token["version"],
                },
            )
            withheld = await worker.get("/connections/initech/token")
        _expect_verdict(
            verdict.cause == "ip_locked"
            and verdict.confidence == "high"
            and verdict.status == "action_required",
            verdict,
        )
        says = " ".join(verdict.evidence)
        expect(
            WORKER_ADDRESS in says and "127.0.0.1" in says,
            f"the evidence does not name both addresses: {says}",
        )
        failing = self.failing_call(since, f"a worker on {WORKER_ADDRESS}", client=WORKER_ADDRESS)
        proofs = [
            r
            for r in self.data_calls(since=since)
            if r["client"] == "127.0.0.1" and r["status"] == 200
        ]
        expect(bool(proofs), "the gateway did not try the token from its own address")
        expect(withheld.status_code == 424, "GET /token after the verdict", withheld)
        calls_before = len(self.data_calls(org.org_id))
        proxied = await self.query("initech")
        expect(proxied.status_code == 424, "a proxied call after the verdict", proxied)
        _expect_cause(proxied, "ip_locked")
        expect(len(self.data_calls(org.org_id)) == calls_before, "the 424 reached Salesforce")
        refreshes = self.grants(org_id=org.org_id) - before
        expect(refreshes == 0, f"{refreshes} refresh grants spent on an IP lock")
        return CauseShown(
            "initech",
            setup=[
                "initech's admin turned on 'Lock sessions to the IP address from which they "
                f"originated'; a direct-mode worker on {WORKER_ADDRESS} fetched the token "
                "(GET /connections/initech/token) and called Salesforce itself"
            ],
            failing=failing,
            answer="401 to the worker, which reported it: POST /connections/initech/report",
            verdict=verdict,
            after=[
                "the same token worked from the gateway's address (its probe got 200): "
                "proven without a single refresh grant",
                "from now on GET /token and proxied calls → 424 action_required, "
                "without calling Salesforce",
            ],
            codes="401 (direct) → 424",
            did="proved the lock, 0 refreshes; stopped",
            status=verdict.status,
        )

    async def api_client_control(self) -> CauseShown:
        org = self.org("globex")
        app = self.emu.apps[0]
        self.emu.admin.patch_org(org.org_id, api_client_control=True, allowed_client_ids=[])
        try:
            before, since = self.grants(org_id=org.org_id), self.now()
            answer = await self.query("globex")
            expect(answer.status_code == 401, "a call under API Client Control", answer)
            _expect_cause(answer, "api_client_control")
            verdict = await self.logged_verdict("globex")
            _expect_verdict(
                verdict.cause == "api_client_control" and verdict.status == "action_required",
                verdict,
            )
            calls_before = len(self.data_calls(org.org_id))
            refused = await self.query("globex")
            expect(refused.status_code == 424, "the next call", refused)
            expect(len(self.data_calls(org.org_id)) == calls_before, "the 424 reached Salesforce")
            refreshes = self.grants(org_id=org.org_id) - before
            expect(refreshes == 0, f"{refreshes} refresh grants spent on a refresh-proof 401")
            # The admin follows the fix; a diagnosis sees the data call work again.
            self.emu.admin.patch_org(org.org_id, allowed_client_ids=[app.client_id])
            fixed = await self.asked_verdict("globex", "diagnose")
            expect(fixed.cause is None and fixed.status == "active", f"after the fix: {fixed}")
            works = await self.query("globex")
            expect(works.status_code == 200, "a call after the fix", works)
        finally:
            self.emu.admin.patch_org(org.org_id, api_client_control=False)
        return CauseShown(
            "globex",
            setup=["globex's admin allowed only allow-listed connected apps (API Access Control)"],
            failing=self.failing_call(since, "the gateway", status=401),
            answer="401 'This session is not valid for use with the REST API' with "
            "Tokenkeep-Cause: api_client_control; no refresh wasted on it",
            verdict=verdict,
            after=[
                "the next call → 424 action_required without calling Salesforce",
                f"the admin allowed the app; POST /connections/globex/diagnose → "
                f"{fixed.status}, and calls → 200 again",
            ],
            codes="401 → 424",
            did="0 refreshes; stopped; admin fixed → active",
            status=f"{verdict.status} → {fixed.status}",
        )

    async def revoked(self) -> CauseShown:
        org = self.org("acme")
        user = org.users[0]
        self.emu.admin.set_password(user.username, "Changed-by-the-demo-1")
        before, since = self.grants(), self.now()
        first = await self.query("acme")
        attempts = self.grants() - before
        expect(first.status_code == 401, "the first call after the password change", first)
        _expect_cause(first, "revoked")
        verdict = await self.logged_verdict("acme")
        _expect_verdict(verdict.cause == "revoked" and verdict.status == "needs_reauth", verdict)
        calls_before, before_second = len(self.data_calls(org.org_id)), self.grants()
        second = await self.query("acme")
        code = error_code(second)
        expect(second.status_code == 409 and code == "needs_reauth", "the next call", second)
        expect(
            len(self.data_calls(org.org_id)) == calls_before and self.grants() == before_second,
            "the 409 reached Salesforce",
        )
        expect(attempts == 1, f"{attempts} refresh attempts instead of one")
        return CauseShown(
            "acme",
            setup=[f"{user.username} changed their password: Salesforce revoked every session"],
            failing=self.failing_call(since, "the gateway", status=401),
            answer="401 with Tokenkeep-Cause: revoked after exactly "
            f"{attempts} refresh attempt (invalid_grant), no refresh loop",
            verdict=verdict,
            after=["the next call got 409 needs_reauth without reaching Salesforce"],
            codes="401 → 409",
            did="1 refresh refused, no loop; stopped",
            status=verdict.status,
        )


def _expect_cause(response: httpx.Response, cause: str) -> None:
    named = response.headers.get("tokenkeep-cause")
    expect(named == cause, f"Tokenkeep-Cause is {named!r}, not {cause!r}", response)


def _expect_verdict(ok: bool, verdict: object) -> None:
    expect(ok, f"tokenkeep concluded otherwise: {verdict}")


def _can_bind(address: str) -> bool:
    """Can this machine send from ``address`` (Linux: all of 127/8; macOS: 127.0.0.1 only)?"""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True
