"""Acknowledge and snooze without a database: the decisions as tables, the grammar, the words, and
the alert message's buttons in each state."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.core.alertdesk import AckStep, ack_step, alert_issue
from bot.core.commands import Acknowledge, Snooze, Unsnooze, spec_of
from bot.core.monitor import DeliveryStep, next_step
from bot.core.parser import parse_command
from bot.core.policy import NoGroupDirectory, Policy, authorise
from bot.core.service import CommandService, Thresholds
from bot.db.alerts import shown
from bot.model.access import AccessRole, Identity, Standing
from bot.model.alerts import Alert, AlertAction, AlertHandled, AlertKind, Shape
from bot.model.audit import (
    AlertAcknowledged,
    AlertSnoozed,
    AlertUnsnoozed,
    AuditEntry,
    AuditNote,
    note_from_json,
    note_to_json,
)
from bot.model.problems import AlertIssue, ForeignButton, NotAllowed
from bot.model.requests import AuditEvent
from bot.model.results import OpenAlerts
from bot.render.blocks import (
    ALERT_ACK_ACTION,
    ALERT_REQUEST_ACTION,
    ALERT_SNOOZE_ACTION,
    ALERT_UNSNOOZE_ACTION,
    alert_message,
)
from bot.render.markup import mention
from bot.render.requests import audit_line, audit_note_text
from bot.render.text import render_text
from bot.slack.listeners.actions import _clicked_snooze

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=4)


def alert(**changes: Any) -> Alert:
    base = Alert(
        id=7,
        target="default",
        kind=AlertKind.ROLE_LIMIT,
        subject="bob",
        severity="warning",  # type: ignore[arg-type]
        shape=Shape.AT_LIMIT,
        details={"used": 5, "limit": 5, "observed_at": NOW.isoformat()},
        opened_at=NOW - timedelta(minutes=12),
        last_seen_at=NOW,
        channel="C0ALERTS",
        message_ts="1700000000.000001",
    )
    return replace(base, **changes)


# --- decisions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolved", "posted", "snoozed", "step"),
    [
        (False, False, False, DeliveryStep.POST),  # news
        (False, False, True, DeliveryStep.HOLD),  # came back within its snooze: not posted again
        (False, True, False, DeliveryStep.EDIT),
        (False, True, True, DeliveryStep.EDIT),  # snoozed, changed (a severity too): edited quietly
        (True, True, False, DeliveryStep.RESOLVE),
        (True, True, True, DeliveryStep.RESOLVE),  # snoozed or not, its resolution is posted
    ],
)
def test_what_delivering_an_alert_does(resolved: bool, posted: bool, snoozed: bool, step: DeliveryStep) -> None:
    subject = alert(
        resolved_at=NOW if resolved else None,
        message_ts="1700000000.000001" if posted else None,
        snoozed_until=LATER if snoozed else None,
    )
    assert next_step(subject) is step


@pytest.mark.parametrize(
    ("acked_by", "who", "step"),
    [(None, "U0ANA", AckStep.TAKE), ("U0ANA", "U0ANA", AckStep.ALREADY), ("U0BOB", "U0ANA", AckStep.TAKE_OVER)],
)
def test_what_an_acknowledge_does(acked_by: str | None, who: str, step: AckStep) -> None:
    assert ack_step(alert(acked_by=acked_by), who) is step


@pytest.mark.parametrize(
    ("found", "resolved", "action", "issue"),
    [
        (False, False, AlertAction.ACKNOWLEDGE, AlertIssue.NOT_FOUND),
        (False, False, AlertAction.SNOOZE, AlertIssue.NOT_FOUND),
        (True, True, AlertAction.ACKNOWLEDGE, AlertIssue.RESOLVED),
        (True, True, AlertAction.SNOOZE, None),  # its problem may come back
        (True, True, AlertAction.UNSNOOZE, None),
        (True, False, AlertAction.ACKNOWLEDGE, None),
    ],
)
def test_what_can_be_done_to_an_alert(found: bool, resolved: bool, action: AlertAction, issue: AlertIssue) -> None:
    subject = alert(resolved_at=NOW if resolved else None) if found else None
    assert alert_issue(subject, action) == issue


def test_what_a_message_shows_changes_with_who_is_on_it_and_the_snooze_only() -> None:
    assert shown(alert()) == "warning:at"  # as before: messages posted by earlier versions are not edited
    assert shown(alert(acked_by="U0ANA")) == "warning:at|ack:U0ANA"
    both = shown(alert(acked_by="U0ANA", snoozed_until=LATER))
    assert both == f"warning:at|ack:U0ANA|snoozed:{int(LATER.timestamp())}"
    assert shown(alert(acked_by="U0ANA", acked_at=NOW, details={"used": 6})) == "warning:at|ack:U0ANA"


# --- the grammar and who may ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("ack 12", Acknowledge(alert_id=12)),
        ("acknowledge #12", Acknowledge(alert_id=12)),
        ("snooze 12", Snooze(alert_id=12, snooze_for=timedelta(hours=1))),
        ("snooze 12 --for 4h", Snooze(alert_id=12, snooze_for=timedelta(hours=4))),
        ("snooze 12 --for 1d", Snooze(alert_id=12, snooze_for=timedelta(days=1))),
        ("unsnooze 12", Unsnooze(alert_id=12)),
    ],
)
def test_ack_snooze_unsnooze_parse(text: str, command: Any) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ack", "needs an alert id"),
        ("ack bob", "is not an alert id"),
        ("ack 0", "is not an alert id"),
        ("snooze 12 --for 30s", "--for is from 1m to 7d"),
        ("snooze 12 --for 8d", "--for is from 1m to 7d"),
        ("unsnooze 12 13", "unexpected extra words"),
    ],
)
def test_ack_snooze_unsnooze_refuse_what_they_cannot_read(text: str, says: str) -> None:
    parsed = parse_command(text)
    assert says in getattr(parsed, "message", ""), parsed


@pytest.mark.parametrize("command", [Acknowledge(alert_id=1), Snooze(alert_id=1), Unsnooze(alert_id=1)])
def test_requesters_and_up_may_acknowledge_and_snooze(command: Any) -> None:
    assert spec_of(command).role is AccessRole.REQUESTER
    for role in (AccessRole.NONE, AccessRole.VIEWER):
        refused = authorise(Standing(role), command)
        assert isinstance(refused, NotAllowed) and refused.needed is AccessRole.REQUESTER
    for role in (AccessRole.REQUESTER, AccessRole.APPROVER):
        assert authorise(Standing(role), command) is None


async def test_a_snooze_choice_the_menu_does_not_offer_is_not_the_bots_menu() -> None:
    policy = Policy(
        viewers=(), requesters=("U0ANA",), approvers=(), default_role=AccessRole.NONE, groups=NoGroupDirectory()
    )
    service = CommandService(catalog=None, policy=policy, thresholds=Thresholds())  # type: ignore[arg-type]
    outcome = await service.alert_button(AlertAction.SNOOZE, 7, Identity("U0ANA"), choice="1y")
    assert outcome.result == ForeignButton("alert")


@pytest.mark.parametrize(
    ("value", "clicked"),
    [("7:1h", (7, "1h")), ("7:4h", (7, "4h")), ("7:", None), ("x:1h", None), ("0:1h", None), ("", None)],
)
def test_the_snooze_menus_value_is_the_alert_and_the_choice(value: str, clicked: Any) -> None:
    assert _clicked_snooze({"actions": [{"selected_option": {"value": value}}]}) == clicked


# --- the message and the answers --------------------------------------------------------------


def _actions(message_blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (actions,) = [b for b in message_blocks if b["type"] == "actions"]
    return {element["action_id"]: element for element in actions["elements"]}


def test_an_open_alert_offers_acknowledge_and_snooze() -> None:
    elements = _actions(alert_message(alert()).blocks)
    assert list(elements) == [ALERT_REQUEST_ACTION, ALERT_ACK_ACTION, ALERT_SNOOZE_ACTION]
    assert (elements[ALERT_ACK_ACTION]["text"]["text"], elements[ALERT_ACK_ACTION]["value"]) == ("Acknowledge", "7")
    menu = elements[ALERT_SNOOZE_ACTION]
    assert menu["type"] == "static_select"
    assert [(o["text"]["text"], o["value"]) for o in menu["options"]] == [
        ("Snooze 1h", "7:1h"),
        ("Snooze 4h", "7:4h"),
        ("Snooze 1d", "7:1d"),
    ]
    # Kinds with nothing to clean up still get them.
    fill = alert(kind=AlertKind.SERVER_FILL, subject="", details={"fill": 0.8}, shape=Shape.CLOSE)
    assert list(_actions(alert_message(fill).blocks)) == [ALERT_ACK_ACTION, ALERT_SNOOZE_ACTION]


def test_an_acknowledged_alert_names_who_is_on_it_and_since_when() -> None:
    text = json.dumps(alert_message(alert(acked_by="U0ANA", acked_at=NOW)).blocks, ensure_ascii=False)
    assert f"👀 <@U0ANA> is on it since <!date^{int(NOW.timestamp())}^" in text


def test_a_snoozed_alert_says_until_when_and_offers_unsnooze() -> None:
    message = alert_message(alert(snoozed_until=LATER, snoozed_by="U0BOB"))
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert f"🔕 snoozed until <!date^{int(LATER.timestamp())}^" in text and "by <@U0BOB>" in text
    elements = _actions(message.blocks)
    assert (elements[ALERT_UNSNOOZE_ACTION]["text"]["text"], elements[ALERT_UNSNOOZE_ACTION]["value"]) == (
        "Un-snooze",
        "7",
    )


def test_a_resolved_alert_offers_nothing_and_says_nobody_is_on_it() -> None:
    done = alert(resolved_at=NOW, resolution_details={}, acked_by="U0ANA", acked_at=NOW, snoozed_until=LATER)
    message = alert_message(done)
    assert not [b for b in message.blocks if b["type"] == "actions"]
    assert "is on it" not in json.dumps(message.blocks) and "snoozed" not in json.dumps(message.blocks)


def test_the_alerts_listing_shows_who_is_on_what_and_what_is_snoozed() -> None:
    listing = render_text(
        OpenAlerts(
            [alert(acked_by="U0ANA", acked_at=NOW), alert(id=8, snoozed_until=LATER, snoozed_by="U0BOB")],
            monitoring=True,
        )
    )
    first, second = [line for line in listing.splitlines() if line.startswith("#")]
    assert "👀 @U0ANA is on it since 2026-11-21 10:00 UTC" in first and "snoozed" not in first
    assert "🔕 snoozed until 2026-11-21 14:00 UTC by @U0BOB" in second and "is on it" not in second


@pytest.mark.parametrize(
    ("handled", "says"),
    [
        (AlertHandled(AlertAction.ACKNOWLEDGE, alert(acked_by="U0ANA")), "You are on alert #7"),
        (
            AlertHandled(AlertAction.ACKNOWLEDGE, alert(acked_by="U0ANA"), previous="U0BOB"),
            "You took alert #7 over from @U0BOB",
        ),
        (AlertHandled(AlertAction.ACKNOWLEDGE, alert(acked_by="U0ANA"), changed=False), "You were on alert #7 already"),
        (
            AlertHandled(AlertAction.SNOOZE, alert(snoozed_until=LATER)),
            "Alert #7 is snoozed until 2026-11-21 14:00 UTC",
        ),
        (AlertHandled(AlertAction.UNSNOOZE, alert()), "Alert #7 is not snoozed any more"),
        (AlertHandled(AlertAction.UNSNOOZE, alert(), changed=False), "Alert #7 was not snoozed"),
    ],
)
def test_what_the_clicker_is_told(handled: AlertHandled, says: str) -> None:
    assert says in render_text(handled)


NOTES: list[tuple[AuditNote, str]] = [
    (AlertAcknowledged(7, AlertKind.ROLE_LIMIT, "bob"), "alert #7 (a role at its connection limit)"),
    (AlertAcknowledged(7, AlertKind.ROLE_LIMIT, "bob", "U0BOB"), "alert #7 (a role at its connection limit)"),
    (AlertSnoozed(8, AlertKind.SERVER_FILL, "", LATER),
     "alert #8 (a server close to max_connections) until 2026-11-21 14:00 UTC"),
    (AlertUnsnoozed(9, AlertKind.TARGET_DOWN, "", LATER),
     "alert #9 (a target not answering), snoozed until 2026-11-21 14:00 UTC"),
]  # fmt: skip


@pytest.mark.parametrize(("note", "words"), NOTES)
def test_alert_audit_notes_survive_the_database_and_read_as_words(note: AuditNote, words: str) -> None:
    assert note_from_json(note_to_json(note)) == note
    assert audit_note_text(note) == words


def test_a_taken_over_acknowledgement_names_both_in_the_audit_trail() -> None:
    entry = AuditEntry(
        id=1,
        at=NOW,
        event=AuditEvent.ACKNOWLEDGED,
        request_id=None,
        action=None,
        target="default",
        role_name="bob",
        pids=(),
        actor="U0ANA",
        requester=None,
        approvers=(),
        outcome=None,
        message_ref=None,
        note=AlertAcknowledged(7, AlertKind.ROLE_LIMIT, "bob", "U0BOB"),
    )
    words = audit_line(entry)
    assert "acknowledged" in words and "role bob" in words and "alert #7" in words
    assert f"by {mention('U0ANA')}" in words and f"taking it over from {mention('U0BOB')}" in words
