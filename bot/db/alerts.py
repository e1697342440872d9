"""Open and resolved alerts in the state database: what makes "once per problem" survive restarts.

Who acknowledged an alert and the snoozes of problems live here too, each change written in one
transaction with its audit entry (``RequestStore.append_audit``), so any replica handles a click
and a restart forgets nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from bot.db.requests import RequestStore
from bot.db.sql import state as sql
from bot.db.state import StateStore
from bot.db.targets import Conn
from bot.model.alerts import Alert, AlertKind, Clearance, Finding, Severity, Shape
from bot.model.audit import NewAuditEntry
from bot.model.text import clean_name, clean_name_optional, clean_optional

REPLICA = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class LockedAlert:
    """An alert whose row is locked for the rest of the transaction (see ``AlertStore.locked``)."""

    alert: Alert
    _conn: Conn
    _store: AlertStore

    async def acknowledge(self, by: str) -> bool:
        cur = await self._conn.execute(sql.ACKNOWLEDGE_ALERT, {"id": self.alert.id, "by": _person(by)})
        return cur.rowcount == 1

    async def snooze(self, seconds: float, by: str) -> datetime:
        """The alert's problem snoozed for ``seconds`` from now (replacing a snooze in force): until when."""
        await self._conn.execute(sql.TRIM_SNOOZES)
        cur = await self._conn.execute(sql.SNOOZE_PROBLEM, self._problem() | {"seconds": seconds, "by": _person(by)})
        row = await cur.fetchone()
        assert row is not None
        return row["until"]  # type: ignore[no-any-return]

    async def unsnooze(self) -> datetime | None:
        """The snooze in force ended now: until when it was to last (None: there was none)."""
        cur = await self._conn.execute(sql.UNSNOOZE_PROBLEM, self._problem())
        row = await cur.fetchone()
        return row["until"] if row is not None else None

    async def audit(self, entry: NewAuditEntry) -> None:
        await self._store.append_audit(entry, self._conn)

    async def reload(self) -> Alert:
        cur = await self._conn.execute(sql.SELECT_ALERT, {"id": self.alert.id})
        row = await cur.fetchone()
        assert row is not None
        self.alert = _alert(row)
        return self.alert

    def _problem(self) -> dict[str, Any]:
        return {"target": self.alert.target, "kind": self.alert.kind, "subject": self.alert.subject}


class AlertStore:
    """The core's ``AlertStore`` port on the state database: alerts, their acknowledgements and
    snoozes, and the monitor's leader lease. ``requests``: where audit entries are written (the
    acknowledge and snooze clicks need it)."""

    def __init__(self, state: StateStore, requests: RequestStore | None = None) -> None:
        self._state = state
        self._requests = requests

    @property
    def ready(self) -> bool:
        return self._state.ready

    async def open_alerts(self, target: str | None = None, limit: int = 100) -> list[Alert]:
        async with self._state.connection() as conn:
            if target is None:
                cur = await conn.execute(sql.OPEN_ALERTS, {"limit": limit})
            else:
                cur = await conn.execute(sql.OPEN_ALERTS_OF_TARGET, {"target": target})
            return [_alert(row) for row in await cur.fetchall()]

    async def open_alerts_of(self, targets: Sequence[str]) -> dict[str, list[Alert]]:
        """Open alerts of several targets, by target, in one query."""
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.OPEN_ALERTS_OF_TARGETS, {"targets": list(targets)})
            found: dict[str, list[Alert]] = {target: [] for target in targets}
            for row in await cur.fetchall():
                found.setdefault(row["target"], []).append(_alert(row))
            return found

    async def get(self, alert_id: int) -> Alert | None:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.SELECT_ALERT, {"id": alert_id})
            row = await cur.fetchone()
            return _alert(row) if row else None

    @contextlib.asynccontextmanager
    async def locked(self, alert_id: int) -> AsyncIterator[LockedAlert | None]:
        """The alert with its row locked until the block ends (and commits): one click at a time."""
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.LOCK_ALERT, {"id": alert_id})
            row = await cur.fetchone()
            yield None if row is None else LockedAlert(_alert(row), conn, self)

    async def append_audit(self, entry: NewAuditEntry, conn: Conn) -> None:
        if self._requests is None:
            raise RuntimeError("this AlertStore has no RequestStore to audit with")
        await self._requests.append_audit(entry, conn)

    async def reconcile(
        self,
        target: str,
        findings: Sequence[Finding],
        clearances: Sequence[Clearance],
        refresh: dict[int, Finding],
        *,
        fence: tuple[uuid.UUID, int] | None = None,
    ) -> bool:
        """Open new alerts, refresh ongoing ones, resolve cleared ones: one transaction per target.

        ``fence``: (holder, epoch) of the leader lease; if it is not held any more, nothing is
        written and False comes back (a leader that was replaced while it hung).
        """
        async with self._state.transaction() as conn:
            if fence is not None:
                cur = await conn.execute(sql.STILL_LEADER, {"me": fence[0], "epoch": fence[1]})
                if await cur.fetchone() is None:
                    return False
            # Each kind in one round trip (psycopg pipelines executemany), however many alerts.
            async with conn.cursor() as cur:
                if findings:
                    await cur.executemany(
                        sql.OPEN_ALERT,
                        [
                            {
                                "target": target,
                                "kind": f.kind,
                                "subject": f.subject,
                                "severity": f.severity,
                                "shape": f.shape,
                                "details": Jsonb(f.details),
                            }
                            for f in findings
                        ],
                    )
                if refresh:
                    await cur.executemany(
                        sql.REFRESH_ALERT,
                        [
                            {"id": alert_id, "severity": f.severity, "shape": f.shape, "details": Jsonb(f.details)}
                            for alert_id, f in refresh.items()
                        ],
                    )
                if clearances:
                    await cur.executemany(
                        sql.RESOLVE_ALERT, [{"id": c.alert_id, "details": Jsonb(c.details)} for c in clearances]
                    )
        return True

    async def hold_leadership(self, me: uuid.UUID, lease: float) -> int | None:
        """Take the monitor's lease if it is free or lapsed, or renew it if it is ours: its epoch,
        or None when another replica holds it."""
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.HOLD_LEADERSHIP, {"me": me, "lease": lease, "name": REPLICA})
            row = await cur.fetchone()
            return int(row["epoch"]) if row is not None else None

    async def release_leadership(self, me: uuid.UUID) -> None:
        await self._run(sql.RELEASE_LEADERSHIP, {"me": me})

    async def unsettled(self, targets: Sequence[str] | None = None) -> list[Alert]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.UNSETTLED_ALERTS, {"targets": list(targets) if targets is not None else None})
            return [_alert(row) for row in await cur.fetchall()]

    async def posted(self, alert: Alert, channel: str, ts: str) -> bool:
        """False when another post of this alert was recorded first."""
        async with self._state.connection() as conn:
            cur = await conn.execute(
                sql.ALERT_POSTED, {"id": alert.id, "channel": channel, "ts": ts, "state": shown(alert)}
            )
            return cur.rowcount == 1

    async def resolve_unmonitored(self, targets: Sequence[str]) -> None:
        await self._run(sql.RESOLVE_UNMONITORED, {"targets": list(targets)})

    async def shown(self, alert: Alert) -> None:
        await self._run(sql.ALERT_SHOWN, {"id": alert.id, "state": shown(alert)})

    async def replied(self, alert: Alert) -> None:
        await self._run(sql.ALERT_REPLIED, {"id": alert.id})

    async def sync_failed(self, alert: Alert, retry_after: float | None) -> None:
        await self._run(sql.ALERT_SYNC_FAILED, {"id": alert.id, "retry_after": retry_after})

    async def _run(self, statement: str, params: dict[str, Any]) -> None:
        async with self._state.connection() as conn:
            await conn.execute(statement, params)


def shown(alert: Alert) -> str:
    """What a posted message shows; a change of this (not of the numbers) edits the message.
    The same as ``sql._alert_state`` (which finds the messages to edit)."""
    state = f"{alert.severity}:{alert.shape}"
    if alert.acked_by is not None:
        state += f"|ack:{alert.acked_by}"
    if alert.snoozed_until is not None:
        state += f"|snoozed:{math.floor(alert.snoozed_until.timestamp())}"
    return state


def _person(user: str) -> str:
    """Who clicked (a Slack ID or a console identity), as stored: one short clean line."""
    return clean_name_optional(user, 80) or "?"


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(
        id=row["id"],
        target=row["target"],
        kind=AlertKind(row["kind"]),
        subject=clean_name(row["subject"]),
        severity=Severity(row["severity"]),
        shape=Shape(row["shape"]) if row["shape"] in _SHAPES else Shape.PLAIN,
        details=dict(row["details"] or {}),
        opened_at=row["opened_at"],
        last_seen_at=row["last_seen_at"],
        resolved_at=row["resolved_at"],
        resolution=clean_optional(row["resolution"], 300),
        channel=row["channel"],
        message_ts=row["message_ts"],
        resolution_details=dict(row["resolution_details"]) if row.get("resolution_details") is not None else None,
        # Read as written (see ``shown``): written clean.
        acked_by=row.get("acked_by"),
        acked_at=row.get("acked_at"),
        snoozed_until=row.get("snoozed_until"),
        snoozed_by=row.get("snoozed_by"),
    )


_SHAPES = frozenset(Shape)
