"""The hand-off between the emulator core (auth, sessions, limits) and the data API.

The core owns sockets, OAuth, sessions and the admin API. For a request under
``/services/data`` on an org's instance host it:

1. answers the versions list itself by delegating to :func:`tokenkeep.emulator.rest.handle`
   with ``ctx=None`` (``GET /services/data`` or ``/services/data/``: no auth, not counted);
2. otherwise authenticates the caller (Bearer token, or ``X-SFDC-Session`` for Bulk 1.0),
   applies session expiry, the host/org check, IP lock, API Client Control, the daily API
   limit and injected faults, counts the call, and then awaits
   ``tokenkeep.emulator.rest.handle(request, ctx)`` with a :class:`RestContext`.

The core adds ``Sforce-Limit-Info`` to the response and records it in the request log (the
``errorCode`` is parsed from a JSON-array error body), so the data API does neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenkeep.clock import Clock

__all__ = ["RestContext"]


@dataclass(slots=True)
class RestContext:
    """What the data API knows about an authenticated call.

    ``rest_path`` is the part after ``/services/data/vNN.N`` (``"/query"``, ``"/"`` for the
    version root, ``""`` when the path stops at the version). ``records`` is the org's
    ``tokenkeep.emulator.records.OrgRecords`` (typed ``Any`` so this module has no import
    of the data layer). ``read_only`` is true while the org is in maintenance / read-only
    mode; writes then fail with INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE and
    ``maintenance_status_code`` (configurable per org; SALESFORCE.md marks it UNCERTAIN).
    ``api_usage`` already includes this call.
    """

    org_id: str
    org_id15: str
    instance_url: str
    api_version: str
    rest_path: str
    user_id: str
    username: str
    read_only: bool
    maintenance_status_code: int
    records: Any
    clock: Clock
    api_usage: int
    api_limit: int
    client_id: str = ""
    access_token: str = ""
