"""Playwright on Debian's Chromium for the dashboard's browser tests (no browser download).

``chromium_or_skip()`` skips a test with a clear reason when ``/usr/bin/chromium`` or the
``playwright`` package is missing -- except under ``CI=true``, where it fails instead
(``scripts/test`` installs the ``chromium`` package with apt-get first).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, as root in a sandbox, and with nothing that calls out of this machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
LAPTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_or_skip() -> None:
    """Skip (fail under ``CI=true``) when the browser or Playwright is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does it)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[test]')"
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests must run under CI=true: {problem}")
    pytest.skip(f"browser tests skipped: {problem}")
