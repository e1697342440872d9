"""Prometheus metrics served on GET /metrics. One module, so every layer records into the same names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10)

COMMANDS = Counter("pgconn_commands_total", "Slash commands answered", ["subcommand", "outcome"])
COMMAND_SECONDS = Histogram(
    "pgconn_command_seconds",
    "Time from receiving a command to delivering its answer",
    ["subcommand"],
    buckets=_LATENCY_BUCKETS,
)
FOREIGN_REQUESTS = Counter(
    "pgconn_foreign_requests_total", "Signed requests refused because they came from another workspace or org"
)
RATE_LIMITED_EVENTS = Counter("pgconn_slack_app_rate_limited_total", "app_rate_limited events Slack sent")
CLICKS = Counter("pgconn_button_clicks_total", "Button clicks by decision and outcome", ["decision", "outcome"])

REQUESTS = Counter(
    "pgconn_requests_total", "kill/cancel requests by action and what became of them at once", ["action", "outcome"]
)
DECISIONS = Counter("pgconn_decisions_total", "Requests decided: approved, denied, expired", ["decision"])
DECISION_SECONDS = Histogram(
    "pgconn_request_decision_seconds",
    "From a request being opened to its decision",
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
EXECUTION_SECONDS = Histogram(
    "pgconn_execution_seconds",
    "From approval to every target signalled and gone (or given up on)",
    buckets=_LATENCY_BUCKETS,
)
TARGET_OUTCOMES = Counter(
    "pgconn_target_outcomes_total", "Backends signalled (or not) by action and outcome", ["action", "outcome"]
)

ALERTS_OPEN = Gauge("pgconn_alerts_open", "Open alerts by kind, as of the monitor's last cycle", ["kind"])
MONITOR_CYCLE_SECONDS = Histogram(
    "pgconn_monitor_cycle_seconds", "Time one monitor cycle takes over every target", buckets=_LATENCY_BUCKETS
)

SLACK_ERRORS = Counter("pgconn_slack_api_errors_total", "Slack Web API calls that failed, by error", ["error"])
SLACK_RETRIES = Counter("pgconn_slack_api_retries_total", "Slack Web API calls retried, by reason", ["reason"])
AUDIT_UNDELIVERED = Gauge(
    "pgconn_audit_undelivered", "Audit entries not yet accepted by Slack (as of the last housekeeping cycle)"
)
AUDIT_UNDELIVERABLE = Gauge(
    "pgconn_audit_undeliverable",
    "Audit entries parked because Slack refuses them in the audit channel (kept in pgconn.audit; see check)",
)

TARGET_QUERY_SECONDS = Histogram(
    "pgconn_target_query_seconds",
    "Time the bot's work on a monitored server takes, by target",
    ["target"],
    buckets=_LATENCY_BUCKETS,
)
