"""Prometheus metrics served on GET /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter("pgconn_commands_total", "Slash commands answered", ["subcommand", "outcome"])
COMMAND_SECONDS = Histogram(
    "pgconn_command_seconds",
    "Time from receiving a command to delivering its answer",
    ["subcommand"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
)

CLICKS = Counter("pgconn_button_clicks_total", "Approve/Deny clicks by decision and outcome", ["decision", "outcome"])

AUDIT_UNDELIVERED = Gauge(
    "pgconn_audit_undelivered", "Audit entries not yet accepted by Slack (as of the last housekeeping cycle)"
)
