"""The README's "Webhooks" receiver example runs as written (with a real secret)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenkeep.events import envelope_body, new_webhook_secret, signed_headers
from tokenkeep.secret import Secret

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text(encoding="utf-8").split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return block


def test_the_readme_receiver_accepts_a_real_webhook_and_refuses_a_forged_one() -> None:
    secret = new_webhook_secret().reveal()
    source = _example().replace('"whsec_..."', repr(secret))
    namespace: dict[str, Any] = {}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 (our own README)
    receive = namespace["receive"]
    body = envelope_body("connection.needs_reauth", datetime.now(tz=UTC), {"connection_id": "acme"})
    headers = signed_headers(Secret(secret), "evt_1", int(time.time()), body)
    assert receive(headers, body) == 204
    assert receive(headers, body.replace(b"acme", b"evil")) == 400
    stale = signed_headers(Secret(secret), "evt_1", int(time.time()) - 600, body)
    assert receive(stale, body) == 400
