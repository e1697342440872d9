"""Structured fields for the one log line per command and click (JSON with PGCONN_LOG_FORMAT=json)."""

from __future__ import annotations

from typing import Any

LOG_FIELDS = ("event", "user", "subcommand", "decision", "request_id", "alert_id", "outcome", "duration_ms")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the values that are set."""
    unknown = set(values) - set(LOG_FIELDS)
    assert not unknown, unknown
    return {key: value for key, value in values.items() if value is not None}
