"""Acknowledge and snooze: who is on an alert, and problems kept quiet for a while.

A click (or ``ack`` / ``snooze`` / ``unsnooze`` typed) is judged under the alert's row lock (the
pure functions below), recorded with its audit entry in one transaction, and the alert's message
edited at once. What that edit misses (Slack away, a race with the monitor editing the same
message) the monitor's next delivery puts right: what a message shows includes who is on it and
the snooze (``db.alerts.shown``), so a message that does not show them yet is edited again.

What a snooze does to the monitor is ``monitor.next_step``'s business: a new alert of a snoozed
problem is held (never posted) until the snooze ends; its resolution is still posted.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import assert_never

from bot.core.ports import AlertAnnouncer, AlertDeskStore
from bot.errors import log_failure
from bot.model.access import Identity
from bot.model.alerts import Alert, AlertAction, AlertHandled, AlertKind
from bot.model.audit import AlertAcknowledged, AlertSnoozed, AlertUnsnoozed, AuditNote, NewAuditEntry
from bot.model.errors import AnnounceError
from bot.model.problems import AlertIssue, AlertNotActionable
from bot.model.requests import AuditEvent

log = logging.getLogger(__name__)


class AckStep(enum.StrEnum):
    """What an Acknowledge click does."""

    TAKE = "take"  # nobody was on it: now the clicker is
    TAKE_OVER = "take_over"  # someone else was: now the clicker is (and both are told)
    ALREADY = "already"  # the clicker was on it already: nothing changes


def alert_issue(alert: Alert | None, action: AlertAction) -> AlertIssue | None:
    """Why nothing can be done to an alert: there is no such alert, or (acknowledge) it is
    resolved. A resolved alert's problem may still be snoozed or un-snoozed: it may come back."""
    if alert is None:
        return AlertIssue.NOT_FOUND
    match action:
        case AlertAction.ACKNOWLEDGE:
            return AlertIssue.RESOLVED if alert.resolved_at is not None else None
        case AlertAction.SNOOZE | AlertAction.UNSNOOZE:
            return None
        case _:
            assert_never(action)


def ack_step(alert: Alert, who: str) -> AckStep:
    if alert.acked_by is None:
        return AckStep.TAKE
    return AckStep.ALREADY if alert.acked_by == who else AckStep.TAKE_OVER


def audit_entry(event: AuditEvent, alert: Alert, identity: Identity, note: AuditNote) -> NewAuditEntry:
    """The audit entry of an action on ``alert``: its target, and its role or session."""
    return NewAuditEntry(
        event=event,
        target=alert.target,
        role_name=alert.subject if alert.kind is AlertKind.ROLE_LIMIT else None,
        pids=(alert.session_pid,) if alert.session_pid is not None else (),
        actor=identity.user_id,
        origin=identity.origin,
        note=note,
    )


class AlertDesk:
    """Acknowledge, snooze and un-snooze alerts (any replica: all of it is in the state database).
    Who may is the subcommands' business (``ack``, ``snooze``, ``unsnooze``: requesters)."""

    def __init__(
        self, store: AlertDeskStore, announcer: AlertAnnouncer, on_audit: Callable[[], None] = lambda: None
    ) -> None:
        """``on_audit``: something was audited (the housekeeper posts it to the audit channel)."""
        self._store = store
        self._announcer = announcer
        self._on_audit = on_audit

    async def acknowledge(self, alert_id: int, identity: Identity) -> AlertHandled | AlertNotActionable:
        action = AlertAction.ACKNOWLEDGE
        async with self._store.locked(alert_id) as locked:
            issue = alert_issue(locked.alert if locked is not None else None, action)
            if locked is None or issue is not None:
                return AlertNotActionable(alert_id, issue or AlertIssue.NOT_FOUND)
            alert = locked.alert
            step = ack_step(alert, identity.user_id)
            if step is AckStep.ALREADY:
                return AlertHandled(action, alert, changed=False)
            previous = alert.acked_by if step is AckStep.TAKE_OVER else None
            if not await locked.acknowledge(identity.user_id):
                return AlertNotActionable(alert_id, AlertIssue.RESOLVED)
            note = AlertAcknowledged(alert.id, alert.kind, alert.subject, previous)
            await locked.audit(audit_entry(AuditEvent.ACKNOWLEDGED, alert, identity, note))
            alert = await locked.reload()
        await self._recorded(alert)
        return AlertHandled(action, alert, previous=previous)

    async def snooze(
        self, alert_id: int, snooze_for: timedelta, identity: Identity
    ) -> AlertHandled | AlertNotActionable:
        action = AlertAction.SNOOZE
        async with self._store.locked(alert_id) as locked:
            issue = alert_issue(locked.alert if locked is not None else None, action)
            if locked is None or issue is not None:
                return AlertNotActionable(alert_id, issue or AlertIssue.NOT_FOUND)
            alert = locked.alert
            until = await locked.snooze(snooze_for.total_seconds(), identity.user_id)
            note = AlertSnoozed(alert.id, alert.kind, alert.subject, until)
            await locked.audit(audit_entry(AuditEvent.SNOOZED, alert, identity, note))
            alert = await locked.reload()
        await self._recorded(alert)
        return AlertHandled(action, alert)

    async def unsnooze(self, alert_id: int, identity: Identity) -> AlertHandled | AlertNotActionable:
        action = AlertAction.UNSNOOZE
        async with self._store.locked(alert_id) as locked:
            issue = alert_issue(locked.alert if locked is not None else None, action)
            if locked is None or issue is not None:
                return AlertNotActionable(alert_id, issue or AlertIssue.NOT_FOUND)
            alert = locked.alert
            until = await locked.unsnooze()
            if until is None:
                return AlertHandled(action, alert, changed=False)
            note = AlertUnsnoozed(alert.id, alert.kind, alert.subject, until)
            await locked.audit(audit_entry(AuditEvent.UNSNOOZED, alert, identity, note))
            alert = await locked.reload()
        await self._recorded(alert)
        return AlertHandled(action, alert)

    async def _recorded(self, alert: Alert) -> None:
        """Done and audited: the audit entry on its way, and the alert's message edited now, by
        whichever replica was clicked (the monitor's next delivery does it otherwise). A resolved
        alert's message is not edited any more."""
        self._on_audit()
        if not self._announcer.can_post or not alert.open or not alert.message_ts:
            return
        try:
            await self._announcer.update_alert(alert)
            await self._store.shown(alert)
        except AnnounceError as exc:
            log.warning("alert %d's message not edited now (the monitor will): %s", alert.id, exc.reason)
        except Exception as exc:
            log_failure(log, logging.WARNING, "alert %d's message not edited now", alert.id, exc=exc)
