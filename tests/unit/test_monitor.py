"""What the monitor finds in a snapshot, and how alerts read."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.monitor import MonitorThresholds, clearance, detect, group_servers
from bot.model.alerts import Alert, AlertKind, Finding, RoleAtLimit, SessionOfNote, Shape, Snapshot
from bot.model.results import OpenAlerts
from bot.render.alerts import summary
from bot.render.blocks import ALERT_REQUEST_ACTION, alert_message, resolved_reply
from bot.render.text import render_text

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
THRESHOLDS = MonitorThresholds(utilization_warn=0.7, utilization_critical=0.9, idle_in_tx_seconds=300)


def snapshot(**changes: object) -> Snapshot:
    base = Snapshot(
        target="default",
        server_version="15.4",
        max_connections=103,
        superuser_reserved=3,
        reserved=0,
        observed_at=NOW,
        client_backends=10,
        full_roles=[],
        idle_in_transaction=[],
        long_queries=[],
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_quiet_server_has_no_findings() -> None:
    assert detect(snapshot(), THRESHOLDS) == []


def test_role_at_and_over_its_limit() -> None:
    full = [RoleAtLimit("bob", 5, 5, ()), RoleAtLimit("eve", 2, 3, ())]
    bob, eve = detect(snapshot(full_roles=full), THRESHOLDS)
    assert (bob.kind, bob.subject, bob.severity, bob.shape) == (AlertKind.ROLE_LIMIT, "bob", "warning", Shape.AT_LIMIT)
    assert summary_of(bob) == "bob is at its connection limit on default" and bob.details["used"] == 5
    assert eve.severity == "critical" and "over" in summary_of(eve)


def summary_of(finding: Finding) -> str:
    """The words an alert opened from ``finding`` starts with."""
    return summary(alert(kind=finding.kind, subject=finding.subject, shape=finding.shape, details=finding.details))


def test_server_fill_thresholds_and_stable_summary() -> None:
    (warn,) = detect(snapshot(client_backends=70), THRESHOLDS)
    (crit,) = detect(snapshot(client_backends=95), THRESHOLDS)
    (warn_again,) = detect(snapshot(client_backends=75), THRESHOLDS)
    assert (warn.kind, warn.severity, crit.severity) == (AlertKind.SERVER_FILL, "warning", "critical")
    assert warn.shape == warn_again.shape != crit.shape  # numbers change; the shape only with severity
    assert summary_of(warn) == summary_of(warn_again) != summary_of(crit)
    assert detect(snapshot(client_backends=69), THRESHOLDS) == []


def test_sessions_are_identified_by_pid_and_start() -> None:
    idle = SessionOfNote(7, "bob", xact_start=datetime(2026, 11, 21, 9, tzinfo=UTC))
    long = SessionOfNote(8, "eve", query_start=datetime(2026, 11, 21, 8, tzinfo=UTC))
    a, b = detect(snapshot(idle_in_transaction=[idle], long_queries=[long]), THRESHOLDS)
    assert (a.kind, a.subject) == (
        AlertKind.IDLE_IN_TRANSACTION,
        f"7:{int(datetime(2026, 11, 21, 9, tzinfo=UTC).timestamp())}",
    )
    assert b.kind == AlertKind.LONG_QUERY and b.subject.startswith("8:")


def alert(**changes: object) -> Alert:
    base = Alert(
        id=3,
        target="default",
        kind=AlertKind.ROLE_LIMIT,
        subject="bob",
        severity="warning",
        shape=Shape.AT_LIMIT,
        details={
            "used": 5,
            "limit": 5,
            "observed_at": NOW.isoformat(),
            "sessions": [
                {
                    "pid": 11,
                    "state": "idle",
                    "application": "<@U1> DBeaver",
                    "client": "10.0.0.1",
                    "state_change": (NOW - timedelta(minutes=30)).isoformat(),
                },
            ],
        },
        opened_at=NOW - timedelta(minutes=12),
        last_seen_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_open_alert_message_has_one_button_into_the_approval_flow() -> None:
    message = alert_message(alert())
    text = json.dumps(message.blocks)
    assert "bob is at its connection limit on default: 5/5" in text and "30m" in text
    assert "<@U1>" not in text  # client-controlled text is escaped
    (actions,) = [b for b in message.blocks if b["type"] == "actions"]
    (button,) = [e for e in actions["elements"] if e["action_id"] == ALERT_REQUEST_ACTION]
    assert (button["action_id"], button["value"], button["text"]["text"]) == (
        ALERT_REQUEST_ACTION,
        "3",
        "Request cleanup",
    )


def test_resolved_alert_has_no_button_and_says_how_long() -> None:
    done = alert(resolved_at=NOW, resolution_details=clearance(alert(), None).details)
    message = alert_message(done)
    assert not [b for b in message.blocks if b["type"] == "actions"]
    assert "Resolved after 12m" in message.text or "Resolved after 12m" in json.dumps(message.blocks)
    assert resolved_reply(done).text == "✅ Resolved after 12m 00s: bob is below its connection limit again."


def test_alerts_listing() -> None:
    assert render_text(OpenAlerts([], monitoring=True)) == "No open alerts."
    assert "monitor is off" in render_text(OpenAlerts([], monitoring=False))
    assert "1 open alert" in render_text(OpenAlerts([alert()], monitoring=True))


# Which targets are one server: (configured address, learnt identity or None) per target.
A, B = "address:db1:5432", "address:db2:5432"
X, Y = "identity:7001@10.0.0.1:5432", "identity:7002@10.0.0.2:5432"


@pytest.mark.parametrize(
    ("keys", "groups"),
    [
        ({"t1": (A,), "t2": (A,)}, {"t1": ["t1", "t2"]}),  # one address, nothing learnt yet
        ({"t1": (A,), "t2": (B,)}, {"t1": ["t1"], "t2": ["t2"]}),
        ({"t1": (A, X), "t2": (B, X)}, {"t1": ["t1", "t2"]}),  # two names for one server
        ({"t1": (A, X), "t2": (B,)}, {"t1": ["t1"], "t2": ["t2"]}),  # t2 not in yet: its own, for now
        # The bot got into t3 first: its identity joins t1 (same address) and t2 (same identity).
        ({"t1": (A,), "t2": (B, X), "t3": (A, X)}, {"t1": ["t1", "t2", "t3"]}),
        ({"t1": (A, X), "t2": (A, Y)}, {"t1": ["t1", "t2"]}),  # never split once grouped by address
        ({"t2": (B,), "t1": (A, X), "t3": (B, X)}, {"t2": ["t2", "t1", "t3"]}),  # the first configured leads
        # The server restarted (a new identity): t1 is back in, t2 not yet; one server all along.
        ({"t1": (A, X, Y), "t2": (B, X)}, {"t1": ["t1", "t2"]}),
    ],
)
def test_targets_are_grouped_by_server_whatever_order_the_bot_got_in(
    keys: dict[str, tuple[str, ...]], groups: dict[str, list[str]]
) -> None:
    assert group_servers(list(keys), keys.__getitem__) == groups
