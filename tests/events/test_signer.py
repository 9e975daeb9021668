"""Standard Webhooks signing (events/signer.py), the envelope (events/envelope.py), the
receiving side's ``tokenkeep.client.verify_webhook``, and the target check
(events/targets.py): pure, no sockets."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks import WebhookVerificationError as LibraryVerificationError

from tokenkeep.client import WebhookVerificationError, verify_webhook
from tokenkeep.clock import ManualClock
from tokenkeep.config import webhook_secret_bytes
from tokenkeep.errors import ConfigError
from tokenkeep.events import envelope_body, new_webhook_secret, signed_headers
from tokenkeep.events.backoff import next_attempt_at
from tokenkeep.events.targets import url_problem, webhook_target_problem

BODY = envelope_body(
    "connection.needs_reauth",
    datetime(2026, 1, 1, tzinfo=UTC),
    {"connection_id": "c1", "org_id": "00D", "status": "needs_reauth", "reason": "revoked"},
)


def test_the_standardwebhooks_library_verifies_our_signature() -> None:
    secret = new_webhook_secret()
    assert secret.reveal().startswith("whsec_")
    assert len(webhook_secret_bytes(secret.reveal()) or b"") == 32
    headers = signed_headers(secret, "evt_1", int(time.time()), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret.reveal()).verify(BODY, headers) == json.loads(BODY)


def test_the_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    import hashlib
    import hmac

    secret = new_webhook_secret()
    key = base64.b64decode(secret.reveal().removeprefix("whsec_"))
    headers = signed_headers(secret, "evt_1", 1_767_225_600, BODY)
    mac = hmac.new(key, b"evt_1.1767225600." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()


def test_a_stale_timestamp_is_rejected() -> None:
    secret = new_webhook_secret()
    stale = signed_headers(secret, "evt_1", int(time.time()) - 301, BODY)
    with pytest.raises(LibraryVerificationError, match="too old"):
        Webhook(secret.reveal()).verify(BODY, stale)
    with pytest.raises(WebhookVerificationError, match="stale or replayed"):
        verify_webhook(stale, BODY, secret.reveal())
    fresh = signed_headers(secret, "evt_1", int(time.time()) - 200, BODY)
    assert verify_webhook(fresh, BODY, secret.reveal())["type"] == "connection.needs_reauth"


def test_verify_webhook_refuses_a_wrong_secret_a_changed_body_and_missing_headers() -> None:
    secret = new_webhook_secret()
    clock = ManualClock(1_767_225_600)
    headers = signed_headers(secret, "evt_1", 1_767_225_600, BODY)
    event = verify_webhook(headers, BODY, secret.reveal(), clock=clock)
    assert event["data"]["connection_id"] == "c1"
    # Header names in any case, several signatures (a rotation) with one good.
    mixed = {k.title(): v for k, v in headers.items()}
    mixed["Webhook-Signature"] = "v1,AAAA " + headers["webhook-signature"]
    assert verify_webhook(mixed, BODY.decode(), secret.reveal(), clock=clock) == event
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify_webhook(headers, BODY, new_webhook_secret().reveal(), clock=clock)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify_webhook(headers, BODY.replace(b"c1", b"c2"), secret.reveal(), clock=clock)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook({"webhook-id": "evt_1"}, BODY, secret.reveal(), clock=clock)
    clock.advance(60)
    with pytest.raises(WebhookVerificationError, match="stale"):
        verify_webhook(headers, BODY, secret.reveal(), clock=clock, tolerance_seconds=30)


def test_the_envelope_has_type_timestamp_and_the_standard_data_keys() -> None:
    body = json.loads(
        envelope_body(
            "connection.needs_reauth",
            datetime(2026, 1, 1, 12, 30, tzinfo=UTC),
            {
                "connection_id": "c1",
                "status": "needs_reauth",
                "reason": "revoked:inactive_user",
                "access_token": "00D!leak",  # never in a body, whoever wrote it
                "nested": {"refresh_token": "5Aep-leak", "ok": 1},
            },
        )
    )
    assert body["type"] == "connection.needs_reauth"
    assert body["timestamp"] == "2026-01-01T12:30:00Z"
    data = body["data"]
    assert {"connection_id", "integration", "org_id", "status", "reason", "fix"} <= set(data)
    assert "reconnect" in data["fix"]  # the diagnosis's words for `revoked`
    assert "leak" not in json.dumps(body)
    assert data["nested"] == {"ok": 1}


@pytest.mark.parametrize(
    ("url", "allow", "problem"),
    [
        ("https://hooks.example.com/x", False, None),
        ("http://hooks.example.com/x", False, None),
        ("ftp://hooks.example.com/x", True, "must be an http:// or https:// URL"),
        ("file:///etc/passwd", True, "must be an http:// or https:// URL"),
        ("https:///x", False, "must name a host"),
        ("http://127.0.0.1/", False, "non-public address (127.0.0.1)"),
        ("http://127.0.0.1/", True, None),
        ("http://localhost:8080/", False, "non-public address (localhost)"),
        ("http://10.1.2.3/", False, "non-public address"),
        ("http://192.168.0.1/", False, "non-public address"),
        ("http://169.254.169.254/latest/meta-data", False, "non-public address"),
        ("http://[::1]/", False, "non-public address"),
        ("http://[::ffff:127.0.0.1]/", False, "non-public address"),
        ("http://0.0.0.0/", False, "non-public address"),
        ("https://93.184.215.14/", False, None),
    ],
)
def test_url_problem(url: str, allow: bool, problem: str | None) -> None:
    found = url_problem(url, allow_private=allow)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    problem = await webhook_target_problem("http://localhost.:9/", allow_private=False)
    assert problem is not None
    assert "non-public" in problem or "resolve" in problem
    assert await webhook_target_problem("http://localhost.:9/", allow_private=True) is None


def test_the_settings_secret_is_validated_at_load_in_one_sentence() -> None:
    from tokenkeep.config import load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(webhook_secret="not-a-secret")
    message = str(caught.value)
    assert message.startswith("TOKENKEEP_WEBHOOK_SECRET is invalid: must be a Standard Webhooks")
    assert "not-a-secret" not in message
    assert message.count(". ") == 0
    with pytest.raises(ConfigError, match="TOKENKEEP_WEBHOOK_SECRET is invalid: must be set"):
        load_settings(webhook_url="https://hooks.example.com/x")
    with pytest.raises(ConfigError, match="TOKENKEEP_WEBHOOK_URL is invalid"):
        load_settings(webhook_url="ftp://hooks.example.com/x", webhook_secret="whsec_x")
    secret = new_webhook_secret().reveal()
    settings = load_settings(webhook_url="https://hooks.example.com/x", webhook_secret=secret)
    assert settings.webhook_secret is not None
    assert secret not in repr(settings)


def test_backoff_is_full_jitter_capped_and_ends_at_the_deadline() -> None:
    import random

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(1)

    def after(attempts: int, elapsed: float) -> float | None:
        from datetime import timedelta

        now = start + timedelta(seconds=elapsed)
        when = next_attempt_at(
            attempts=attempts,
            queued_at=start,
            now=now,
            base_seconds=5,
            cap_seconds=3600,
            max_age_seconds=259_200,
            rng=rng,
        )
        return None if when is None else (when - now).total_seconds()

    delays = [after(1, 0) for _ in range(200)]
    assert all(d is not None and 0 <= d <= 5 for d in delays)
    assert max(d or 0 for d in delays) > 4  # spread over the whole range
    assert all(0 <= (after(20, 100) or -1) <= 3600 for _ in range(50))
    assert after(3, 259_199.5) == pytest.approx(0.5, abs=0.5)
    assert after(3, 259_200) is None
