"""Org health, shared by every gateway (docs/ARCHITECTURE.md, "Org health").

* ``windows``: sliding-window counts and the session-error spike rule (pure);
* ``write_pause``: the write-pause contract and the in-process state machine;
* ``shared_pause``: the write pause kept in the database, one state for every gateway;
* ``health``: :class:`OrgHealth`, the in-memory call counters flushed to the database,
  the shared ``Sforce-Limit-Info`` and the spike episodes;
* ``overview``: what ``GET /orgs/{org_id}`` and ``tokenkeep orgs show`` report.
"""
