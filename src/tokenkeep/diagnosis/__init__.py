"""Telling the six causes of ``INVALID_SESSION_ID`` apart: the classifier (pure), the probes
that gather its evidence, and the service that records a verdict (status, event, log)."""
