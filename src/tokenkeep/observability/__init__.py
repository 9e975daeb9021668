"""Logging, the operation log and metrics."""
