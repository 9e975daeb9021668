"""``tokenkeep demo``: a guided tour of the gateway against the Salesforce org emulator.

Everything runs in one process on loopback, on a fresh temporary SQLite data dir:

* the org emulator (3 orgs, one connected app) and the real gateway, started by
  :func:`tokenkeep.harness.running_gateway` (the pytest plugin's harness), share one
  :class:`~tokenkeep.clock.OffsetClock`, so "two hours pass" moves both sides together, as
  time does in real life;
* the tour then talks to the gateway over HTTP only, the way an app would: it registers the
  emulator's connected app, connects the three orgs through the hosted connect flow
  (:func:`tokenkeep.harness.connect_through_flow` posts the emulator's HTML login and
  approval pages with an HTTP client), sends proxied calls through ``/c/<connection id>/...``,
  lets two hours pass (every session renewed before use, one refresh each), and then
  produces the six causes of ``INVALID_SESSION_ID`` one by one with the emulator's admin API:
  ``expired``, ``wrong_instance``, ``maintenance``, ``ip_locked`` (a direct-mode worker on
  127.0.0.3), ``api_client_control`` and ``revoked``.

Each cause step prints the failing call and what tokenkeep concluded (cause, confidence,
evidence, fix, the connection's status), and checks it against the gateway's answers and
the emulator's request log; a summary table of the six ends the tour. Nothing secret is
printed: no token, no client secret, no password; the API key once, at the end, as the
demo's ready key.

:func:`run_demo` is what the CLI calls; :func:`demo_environment` and :func:`run_tour` are
the pieces (tests drive them in-process). The first steps are in
:mod:`tokenkeep.demo.steps`, the six causes in :mod:`tokenkeep.demo.causes`, what a step
returns in :mod:`tokenkeep.demo.results`, what is printed in :mod:`tokenkeep.demo.output`,
the command in :mod:`tokenkeep.demo.command`.
"""

from __future__ import annotations

from tokenkeep.demo.command import (
    DEFAULT_PORT,
    DemoEnvironment,
    demo_environment,
    run_demo,
    run_tour,
)
from tokenkeep.demo.results import StepResult, TourResult

__all__ = [
    "DEFAULT_PORT",
    "DemoEnvironment",
    "StepResult",
    "TourResult",
    "demo_environment",
    "run_demo",
    "run_tour",
]
