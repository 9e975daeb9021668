"""Telling the six causes of ``INVALID_SESSION_ID`` apart: the classifier (pure), the probes
that gather its evidence, the service that runs them (:mod:`.service`), and what a verdict
changes (status, event, log: :mod:`.effects`)."""
