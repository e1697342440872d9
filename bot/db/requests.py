"""Requests, approvals and the audit trail in the state database (PGCONN_STATE_URL).

Every change that matters happens in one transaction together with its audit entry (and, when an
audit channel is configured, the entry's place in the outbox), so the trail cannot miss a step.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from bot.db.sql import state as sql
from bot.db.state import StateStore
from bot.db.targets import Conn
from bot.model.activity import RoleFill
from bot.model.audit import (
    REFUSAL_EVENTS,
    AuditEntry,
    Delivery,
    NewAuditEntry,
    RefusalsSummarised,
    Undeliverable,
    note_from_json,
    note_to_json,
)
from bot.model.drains import Drain
from bot.model.errors import TooManyOpenRequests
from bot.model.requests import (
    Approval,
    AuditEvent,
    KillScope,
    NewRequest,
    Openings,
    OutcomeNote,
    RequestStatus,
    RequestTarget,
    SignalAction,
    SignalOutcome,
    SignalRequest,
    SparedSession,
    TargetOutcome,
)
from bot.model.text import clean, clean_name, clean_name_optional, clean_optional

# An entry parked as undeliverable to the audit channel is tried again this often (in case the
# channel was fixed: the bot invited, the channel unarchived), and at once when the channel changes.
PARK_RETRY_SECONDS = 3600.0
# Free text in the trail (reasons, outcomes, typed role names) is capped at this many characters.
TEXT_LIMIT = 600


def _id(value: str | None) -> str | None:
    """A Slack ID or a console identity: one short clean line."""
    return clean_name_optional(value, 80)


REFUSALS_PER_WINDOW = 5
REPLICA_NAME = f"{socket.gethostname()}:{os.getpid()}"
REFUSAL_WINDOW_SECONDS = 60.0


@dataclass
class LockedRequest:
    """A request whose row is locked for the rest of the transaction (see ``RequestStore.locked``)."""

    request: SignalRequest
    _conn: Conn
    _store: RequestStore
    changed: list[str] = field(default_factory=list)

    async def add_approval(self, approver: str) -> bool:
        cur = await self._conn.execute(sql.ADD_APPROVAL, {"id": self.request.id, "approver": approver})
        return cur.rowcount == 1

    async def set_status(self, status: str, decided_by: str | None) -> bool:
        cur = await self._conn.execute(sql.DECIDE, {"id": self.request.id, "status": status, "decided_by": decided_by})
        return cur.rowcount == 1

    async def expire(self) -> bool:
        cur = await self._conn.execute(sql.EXPIRE_ONE, {"id": self.request.id})
        return cur.rowcount == 1

    async def audit(self, entry: NewAuditEntry) -> None:
        await self._store.append_audit(entry, self._conn)

    async def audit_refusal(self, entry: NewAuditEntry) -> None:
        await self._store.append_refusal(entry, self._conn)

    async def refused_before(self, actor: str) -> bool:
        cur = await self._conn.execute(sql.REFUSED_CLICK_SEEN, {"id": self.request.id, "actor": actor})
        return await cur.fetchone() is not None

    async def reload(self) -> SignalRequest:
        loaded = await self._store._load(self._conn, self.request.id, lock=False)
        assert loaded is not None
        self.request = loaded
        return loaded


class RequestStore:
    """The core's ``RequestStore`` port on the state database: requests, approvals, their Slack
    messages, the audit trail and its outbox, leases and heartbeats."""

    def __init__(self, state: StateStore, *, audit_channel: str | None, replica: uuid.UUID | None = None) -> None:
        self._state = state
        self._audit_channel = audit_channel
        self.replica = replica or uuid.uuid4()  # this process, as the holder of leases

    @property
    def audit_channel(self) -> str | None:
        return self._audit_channel

    @property
    def ready(self) -> bool:
        """The state database is migrated (a bot started without it waits for that)."""
        return self._state.ready

    # --- requests ----------------------------------------------------------------------------

    async def openings(self, requester: str, conn: Conn | None = None) -> Openings:
        if conn is None:
            async with self._state.connection() as own:
                return await self.openings(requester, own)
        cur = await conn.execute(sql.OPEN_REQUESTS_OF, {"requester": requester})
        rows = await cur.fetchall()
        return Openings([int(row["id"]) for row in rows if row["open"]], len(rows))

    async def open_request(
        self,
        new: NewRequest,
        audit: NewAuditEntry,
        *,
        max_open: int,
        posting: bool,
        per_minute: int | None = None,
        executing: NewAuditEntry | None = None,
    ) -> SignalRequest:
        """Store a request with its audit entry. ``posting``: not approvable until ``mark_posted``.

        Raises TooManyOpenRequests when the requester may not open another one now.
        """
        async with self._state.transaction() as conn:
            await conn.execute(sql.REQUESTER_LOCK, {"requester": new.requester})
            openings = await self.openings(new.requester, conn)
            if openings.too_many(max_open) or (per_minute is not None and openings.last_minute >= per_minute):
                raise TooManyOpenRequests(openings)
            cur = await conn.execute(
                sql.INSERT_REQUEST,
                {
                    "status": "posting" if posting else "pending",
                    "ttl": new.ttl_seconds,
                    "requester": _id(new.requester),
                    "requester_name": clean_name_optional(new.requester_name, 80),
                    "action": new.action,
                    "scope": new.scope,
                    "target": _id(new.target),
                    "role_name": clean_name_optional(new.role_name),
                    "older_than": new.older_than,
                    "reason": clean_optional(new.reason, TEXT_LIMIT),
                    "command_text": clean_optional(new.command_text, TEXT_LIMIT),
                    "fills": Jsonb([{"role": f.role, "used": f.used, "limit": f.limit} for f in new.fills]),
                    "required_approvals": new.required_approvals,
                    "origin_channel": new.origin_channel,
                    "escalate_after": new.escalate_after,
                    "database_name": clean_name_optional(new.database_name),
                    "drain_for": new.drain_for,
                    "spared": Jsonb(
                        [{"pid": s.pid, "role": clean_name_optional(s.role), "why": s.why} for s in new.spared]
                    ),
                },
            )
            row = await cur.fetchone()
            assert row is not None
            request_id = int(row["id"])
            async with conn.cursor() as targets:
                await targets.executemany(sql.INSERT_TARGET, [_target_params(request_id, t) for t in new.targets])
            await self.append_audit(_with_request_id(audit, request_id), conn)
            if executing is not None:
                await conn.execute(sql.START_SELF_SERVICE, {"id": request_id, "decided_by": _id(executing.actor)})
                await self.append_audit(_with_request_id(executing, request_id), conn)
            loaded = await self._load(conn, request_id, lock=False)
        assert loaded is not None
        return loaded

    async def get(self, request_id: int) -> SignalRequest | None:
        async with self._state.connection() as conn:
            return await self._load(conn, request_id, lock=False)

    @contextlib.asynccontextmanager
    async def locked(self, request_id: int) -> AsyncIterator[LockedRequest | None]:
        """The request with its row locked until the block ends (and commits): one decision at a time."""
        async with self._state.transaction() as conn:
            request = await self._load(conn, request_id, lock=True)
            yield None if request is None else LockedRequest(request, conn, self)

    async def pending(self, limit: int = 50) -> list[SignalRequest]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.PENDING_REQUESTS, {"limit": limit})
            ids = [row["id"] for row in await cur.fetchall()]
            loaded = [await self._load(conn, request_id, lock=False) for request_id in ids]
        return [request for request in loaded if request is not None]

    async def mark_posted(self, request_id: int, channel: str, ts: str | None) -> tuple[SignalRequest, int] | None:
        """Posted: approvable from now on, unless it was decided or withdrawn meanwhile. The request
        as it stands, and its message_version then."""
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.MARK_POSTED, {"id": request_id, "channel": channel, "ts": ts or None})
            row = await cur.fetchone()
            request = await self._load(conn, request_id, lock=False)
        return None if row is None or request is None else (request, int(row["message_version"]))

    async def adopt_message(self, request_id: int, channel: str, ts: str) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.ADOPT_MESSAGE, {"id": request_id, "channel": channel, "ts": ts})

    async def withdraw(self, request_id: int, audit: NewAuditEntry) -> SignalRequest | None:
        """Withdrawn only if still being posted; the request as it stands either way."""
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.WITHDRAW, {"id": request_id})
            if cur.rowcount == 1:
                await self.append_audit(audit, conn)
            return await self._load(conn, request_id, lock=False)

    async def finish(self, request_id: int, outcomes: Sequence[SignalOutcome], audit: NewAuditEntry) -> SignalRequest:
        async with self._state.transaction() as conn:
            await self._record_outcomes(conn, request_id, outcomes)
            cur = await conn.execute(sql.FINISH, {"id": request_id})
            if cur.rowcount == 1:
                await self.append_audit(audit, conn)
            loaded = await self._load(conn, request_id, lock=False)
        assert loaded is not None
        return loaded

    async def begin_escalation(
        self, request_id: int, outcomes: Sequence[SignalOutcome], audit: NewAuditEntry
    ) -> SignalRequest | None:
        """The ladder's cancel step recorded (its outcomes and audit entry); the request waits,
        'escalating', until its escalate_at. None when it was not executing any more."""
        async with self._state.transaction() as conn:
            await self._record_outcomes(conn, request_id, outcomes)
            cur = await conn.execute(sql.BEGIN_ESCALATION, {"id": request_id})
            if cur.rowcount != 1:
                return None
            await self.append_audit(audit, conn)
            return await self._load(conn, request_id, lock=False)

    async def claim_escalation(self, request_id: int) -> SignalRequest | None:
        """The second step, for this process alone (executing again); None when another has it
        or it is no longer escalating."""
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.CLAIM_ESCALATION, {"id": request_id})
            if cur.rowcount != 1:
                return None
            return await self._load(conn, request_id, lock=False)

    async def due_escalations(self, late_after: float) -> list[int]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.DUE_ESCALATIONS, {"after": late_after})
            return [int(row["id"]) for row in await cur.fetchall()]

    # --- drains --------------------------------------------------------------------------------

    async def add_targets(self, request_id: int, targets: Sequence[RequestTarget]) -> SignalRequest:
        """A drain's sessions that appeared after its request (each re-checked like the others)."""
        async with self._state.transaction() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(sql.INSERT_TARGET_IF_NEW, [_target_params(request_id, t) for t in targets])
            loaded = await self._load(conn, request_id, lock=False)
        assert loaded is not None
        return loaded

    async def record_drain(self, target: str, database: str, request_id: int, drain_for: timedelta) -> Drain | None:
        """The drain in force from now (None: one was in force already)."""
        params = {"target": target, "database": database, "request_id": request_id, "drain_for": drain_for}
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.RECORD_DRAIN, params)
            row = await cur.fetchone()
        return _drain(row) if row else None

    async def drains_in_force(self, target: str | None = None) -> list[Drain]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.DRAINS_IN_FORCE, {"target": target})
            return [_drain(row) for row in await cur.fetchall()]

    async def due_undrains(self) -> list[Drain]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.DUE_UNDRAINS)
            return [_drain(row) for row in await cur.fetchall()]

    async def end_drain(self, drain_id: int, by: str | None, audit: NewAuditEntry) -> Drain | None:
        """Mark it undrained (with its audit entry), once; None when another process did."""
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.END_DRAIN, {"id": drain_id, "by": _id(by)})
            row = await cur.fetchone()
            if row is None:
                return None
            await self.append_audit(audit, conn)
        return _drain(row)

    async def close_overdue(
        self,
        *,
        interrupted_after: float,
        unposted_after: float,
        audit_for: Callable[[SignalRequest], NewAuditEntry],
    ) -> list[SignalRequest]:
        """Expire pending requests past their TTL, report executions cut off by a crash, and
        withdraw requests a crash left half-posted.

        ``audit_for(request)`` builds each one's audit entry; entries commit with the change.
        """
        closed: list[SignalRequest] = []
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.EXPIRE_DUE)
            ids = [row["id"] for row in await cur.fetchall()]
            cur = await conn.execute(sql.INTERRUPT_STALE, {"after": interrupted_after})
            ids += [row["id"] for row in await cur.fetchall()]
            cur = await conn.execute(sql.WITHDRAW_STALE_POSTING, {"after": unposted_after})
            ids += [row["id"] for row in await cur.fetchall()]
            for request_id in ids:
                request = await self._load(conn, request_id, lock=False)
                if request is not None:
                    await self.append_audit(audit_for(request), conn)
                    closed.append(request)
        return closed

    # --- the request message in Slack ---------------------------------------------------------

    async def unsynced_messages(self, limit: int = 20) -> list[int]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.UNSYNCED_MESSAGES, {"limit": limit})
            return [row["id"] for row in await cur.fetchall()]

    async def message_state(self, request_id: int) -> str | None:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.MESSAGE_STATE, {"id": request_id})
            row = await cur.fetchone()
            return str(row["state"]) if row else None

    async def claim_message_sync(
        self, request_id: int, owner: uuid.UUID, lease: float
    ) -> tuple[SignalRequest, str | None, int] | None:
        """The request as it stands, what its message shows and its message_version, if this caller
        now holds the message's sync lease (committed: nothing is held while Slack is asked)."""
        async with self._state.connection() as conn:
            cur = await conn.execute(
                sql.CLAIM_MESSAGE_SYNC, {"id": request_id, "owner": owner, "lease": lease, "replica": self.replica}
            )
            row = await cur.fetchone()
            if row is None:
                return None
            request = await self._load(conn, request_id, lock=False)
        return None if request is None else (request, row["shown_state"], int(row["message_version"]))

    async def posted_as_shown(self, request_id: int, state: str, version: int) -> bool:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.POSTED_AS_SHOWN, {"id": request_id, "state": state, "version": version})
            return cur.rowcount == 1

    async def message_shown(self, request_id: int, owner: uuid.UUID, state: str, version: int) -> bool:
        """Record what the message shows now (read at ``version``); False if the lease was lost."""
        async with self._state.connection() as conn:
            cur = await conn.execute(
                sql.MESSAGE_SHOWN, {"id": request_id, "owner": owner, "state": state, "version": version}
            )
            return cur.rowcount == 1

    async def message_sync_failed(self, request_id: int, owner: uuid.UUID) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.MESSAGE_SYNC_FAILED, {"id": request_id, "owner": owner})

    async def release_message_sync(self, request_id: int, owner: uuid.UUID) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.RELEASE_MESSAGE_SYNC, {"id": request_id, "owner": owner})

    async def release_requester_notice(self, request_id: int) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.RELEASE_REQUESTER_NOTICE, {"id": request_id})

    async def claim_requester_notice(self, request_id: int) -> bool:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.CLAIM_REQUESTER_NOTICE, {"id": request_id})
            return cur.rowcount == 1

    # --- audit -------------------------------------------------------------------------------

    async def append_audit(self, entry: NewAuditEntry, conn: Conn | None = None) -> int:
        # Whatever a user typed or a database returned is one clean, capped line by now; this
        # is the last door before the trail, so it is cleaned again here.
        params = {
            "event": entry.event,
            "request_id": entry.request_id,
            "action": entry.action,
            "target": clean_name_optional(entry.target),
            "role_name": clean_name_optional(entry.role_name, TEXT_LIMIT),
            "pids": list(entry.pids),
            "actor": _id(entry.actor),
            "requester": _id(entry.requester),
            "approvers": [_id(a) for a in entry.approvers],
            "detail": Jsonb(_cleaned_note(note_to_json(entry.note))) if entry.note is not None else None,
            "message_ref": clean_name_optional(entry.message_ref),
            "origin": clean_optional(entry.origin, 120),
            "channel": self._audit_channel,
            "lane": 1 if entry.event in REFUSAL_EVENTS else 0,
        }
        if conn is None:
            async with self._state.connection() as own:
                cur = await own.execute(sql.APPEND_AUDIT, params)
                row = await cur.fetchone()
        else:
            cur = await conn.execute(sql.APPEND_AUDIT, params)
            row = await cur.fetchone()
        assert row is not None
        return int(row["id"])

    async def append_refusal(self, entry: NewAuditEntry, conn: Conn | None = None) -> bool:
        """Record a refusal, up to REFUSALS_PER_WINDOW per person and minute; beyond that it is
        only counted, and the count becomes one "more_refused" entry when the minute is over.
        Returns whether this one was recorded on its own."""
        if conn is None:
            async with self._state.transaction() as own:
                return await self.append_refusal(entry, own)
        actor = {"actor": _id(entry.actor) or "?"}
        cur = await conn.execute(sql.LOCK_REFUSAL_WINDOW, {**actor, "window": REFUSAL_WINDOW_SECONDS})
        window = await cur.fetchone()
        assert window is not None
        recorded = int(window["recorded"])
        if window["over"]:
            await self._summarise_refusals(conn, actor["actor"], window)
            await conn.execute(sql.RESTART_REFUSAL_WINDOW, actor)
            recorded = 0
        record = recorded < REFUSALS_PER_WINDOW
        if record:
            await self.append_audit(entry, conn)
        await conn.execute(sql.COUNT_REFUSAL, {**actor, "recorded": record})
        return record

    async def close_refusal_windows(self) -> int:
        """Summarise what minutes that are over kept back; returns how many entries that wrote."""
        written = 0
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.CLOSE_REFUSAL_WINDOWS, {"window": REFUSAL_WINDOW_SECONDS})
            for window in await cur.fetchall():
                written += await self._summarise_refusals(conn, window["actor"], window)
        return written

    async def _summarise_refusals(self, conn: Conn, actor: str, window: dict[str, Any]) -> int:
        if not window["suppressed"]:
            return 0
        note = RefusalsSummarised(int(window["suppressed"]), window["first_suppressed"], window["last_suppressed"])
        await self.append_audit(NewAuditEntry(event=AuditEvent.MORE_REFUSED, actor=actor, note=note), conn)
        return 1

    async def recent_audit(self, limit: int) -> list[AuditEntry]:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.RECENT_AUDIT, {"limit": limit})
            return [_audit_entry(row) for row in await cur.fetchall()]

    def _queue(self, **more: Any) -> dict[str, Any]:
        return {"channel": self._audit_channel, "park_retry": PARK_RETRY_SECONDS, "replica": self.replica, **more}

    async def heartbeat(self) -> None:
        """This replica is alive: the leases it holds count (see sql.HEARTBEAT)."""
        async with self._state.connection() as conn:
            await conn.execute(sql.HEARTBEAT, {"replica": self.replica, "name": REPLICA_NAME})

    async def goodbye(self) -> None:
        """Stopping: whatever this replica still holds is free for the others at once."""
        async with self._state.connection() as conn:
            await conn.execute(sql.GOODBYE, {"replica": self.replica})

    async def claim_delivery(self, lease_seconds: float) -> Delivery | None:
        """The head of the queue for the audit channel configured now, leased to this caller.

        Claim and read are one transaction: cancelled in between, nothing stays leased.
        """
        async with self._state.transaction() as conn:
            cur = await conn.execute(sql.CLAIM_AUDIT_DELIVERY, self._queue(lease=lease_seconds))
            claim = await cur.fetchone()
            if claim is None:
                return None
            cur = await conn.execute(sql.SELECT_AUDIT_FOR_DELIVERY, {"id": claim["audit_id"]})
            row = await cur.fetchone()
            assert row is not None
            ref = f"{row['request_channel']}/{row['request_ts']}" if row["request_ts"] else row["message_ref"]
            return Delivery(_audit_entry(row), claim["attempts"], ref)

    async def delivered(self, audit_id: int, ts: str | None) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.AUDIT_DELIVERED, {"id": audit_id, "ts": ts, "channel": self._audit_channel})

    async def delivery_failed(self, audit_id: int, error: str, delay: float) -> None:
        async with self._state.connection() as conn:
            await conn.execute(sql.AUDIT_DELIVERY_FAILED, {"id": audit_id, "error": error[:500], "delay": delay})

    async def park(self, audit_id: int, error: str, *, whole_channel: bool) -> None:
        """Slack will never take this entry (or anything in this channel): keep it out of the way."""
        statement = sql.PARK_AUDIT_CHANNEL if whole_channel else sql.PARK_AUDIT_ENTRY
        async with self._state.connection() as conn:
            await conn.execute(statement, {"id": audit_id, "error": error[:500], "channel": self._audit_channel})

    async def trim(self, retention_seconds: float, batch: int = 1000) -> dict[str, int]:
        """Delete what is done: delivered outbox rows after a day; finished requests (with their
        targets and approvals) and resolved alerts after ``retention_seconds``. The audit table
        itself is never trimmed. Returns how many rows went, by kind."""
        trimmed: dict[str, int] = {}
        params = {"retention": retention_seconds, "batch": batch}
        for kind, statement in (
            ("outbox", sql.TRIM_DELIVERED_OUTBOX),
            ("requests", sql.TRIM_REQUESTS),
            ("alerts", sql.TRIM_ALERTS),
            ("gates", sql.TRIM_REQUESTER_GATES),
            ("replicas", sql.TRIM_REPLICAS),
        ):
            total = 0
            while True:
                async with self._state.connection() as conn:
                    cur = await conn.execute(statement, params)
                total += max(0, cur.rowcount)
                if cur.rowcount < batch or kind in ("gates", "replicas"):
                    break
            trimmed[kind] = total
        return trimmed

    async def retry_waiting(self) -> int:
        """Every waiting entry is due now, parked ones included (done when a replica starts)."""
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.RETRY_WAITING_AUDIT)
            return cur.rowcount

    async def undeliverable(self) -> Undeliverable:
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.UNDELIVERABLE_AUDIT, {"channel": self._audit_channel})
            row = await cur.fetchone()
        assert row is not None
        return Undeliverable(int(row["parked"]), row["since"], clean_optional(row["error"], 200))

    async def next_delivery_due(self) -> tuple[float | None, int]:
        """Seconds until the next undelivered audit entry is due (None: nothing waits), and how many wait."""
        async with self._state.connection() as conn:
            cur = await conn.execute(sql.NEXT_AUDIT_DUE, self._queue())
            row = await cur.fetchone()
        if row is None or not row["waiting"]:
            return None, 0
        return max(0.0, float(row["seconds"])), int(row["waiting"])

    # --- loading -----------------------------------------------------------------------------

    async def _record_outcomes(self, conn: Conn, request_id: int, outcomes: Sequence[SignalOutcome]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                sql.RECORD_OUTCOME,
                [
                    {
                        "request_id": request_id,
                        "pid": o.pid,
                        "outcome": o.outcome,
                        "detail": o.note,
                        "error": clean_optional(o.error, TEXT_LIMIT),
                    }
                    for o in outcomes
                ],
            )

    async def _load(self, conn: Conn, request_id: int, *, lock: bool) -> SignalRequest | None:
        cur = await conn.execute(sql.LOCK_REQUEST if lock else sql.SELECT_REQUEST, {"id": request_id})
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await conn.execute(sql.SELECT_TARGETS, {"id": request_id})
        targets = tuple(_target(t) for t in await cur.fetchall())
        cur = await conn.execute(sql.SELECT_APPROVALS, {"id": request_id})
        approvals = tuple(Approval(a["approver"], a["approved_at"]) for a in await cur.fetchall())
        return SignalRequest(
            id=row["id"],
            action=SignalAction(row["action"]),
            scope=KillScope(row["scope"]),
            target=row["target"],
            role_name=clean_name_optional(row["role_name"]),
            older_than=row["older_than"],
            reason=clean_optional(row["reason"], TEXT_LIMIT),
            command_text=clean_optional(row["command_text"], TEXT_LIMIT) or "",
            requester=row["requester"],
            requester_name=clean_name_optional(row["requester_name"], 80),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            now=row["now"],
            status=RequestStatus(row["status"]),
            required_approvals=row["required_approvals"],
            approvals=approvals,
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            finished_at=row["finished_at"],
            channel=row["channel"],
            message_ts=row["message_ts"],
            targets=targets,
            fills=tuple(
                RoleFill(clean_name_optional(f["role"]) or "?", int(f["used"]), int(f["limit"]))
                for f in row["fills"] or []
            ),
            escalate_after=row["escalate_after"],
            escalate_at=row["escalate_at"],
            database_name=row["database_name"],
            drain_for=row["drain_for"],
            spared=tuple(
                SparedSession(int(s["pid"]), clean_name_optional(s.get("role")), clean_name(str(s["why"])))
                for s in row["spared"] or []
                if isinstance(s, dict) and "pid" in s and "why" in s
            ),
        )


def _target_params(request_id: int, t: RequestTarget) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "pid": t.pid,
        "backend_start": t.backend_start,
        "role_oid": t.role_oid,
        "role_name": t.role,
        "database": t.database,
        "application": t.application,
        "client": t.client,
        "state": t.state,
        "state_change": t.state_change,
        "xact_start": t.xact_start,
        "query_start": t.query_start,
        "observed_at": t.observed_at,
        "blocks": list(t.blocks),
    }


def _drain(row: dict[str, Any]) -> Drain:
    return Drain(
        id=int(row["id"]),
        target=row["target"],
        database=row["database"],
        request_id=row["request_id"],
        drained_at=row["drained_at"],
        until=row["until"],
        now=row["now"],
    )


def _with_request_id(entry: NewAuditEntry, request_id: int) -> NewAuditEntry:
    return replace(entry, request_id=request_id)


_NOTES = frozenset(OutcomeNote)
NOTE_TEXT_LIMIT = TEXT_LIMIT  # per string in a note: a reason, a server's error, a role name
NOTE_ITEMS_LIMIT = 100  # per list in a note (a request has at most 50 pids)


def _cleaned_note(value: Any) -> Any:
    """A note's JSON with every string one clean, capped line (whatever a user typed, a database
    said or Slack answered), and every list capped: the trail's last door."""
    if isinstance(value, str):
        return clean(value, NOTE_TEXT_LIMIT)
    if isinstance(value, list):
        return [_cleaned_note(item) for item in value[:NOTE_ITEMS_LIMIT]]
    if isinstance(value, dict):
        return {key: _cleaned_note(item) for key, item in value.items()}
    return value


def _target(row: dict[str, Any]) -> RequestTarget:
    return RequestTarget(
        pid=row["pid"],
        backend_start=row["backend_start"],
        role_oid=int(row["role_oid"]),
        role=clean_name_optional(row["role_name"]) or "?",
        database=clean_name_optional(row["database"]),
        application=clean_name_optional(row["application"]),
        client=clean_name_optional(row["client"]),
        state=clean_name_optional(row["state"]),
        state_change=row["state_change"],
        xact_start=row["xact_start"],
        observed_at=row["observed_at"],
        blocks=tuple(row["blocks"] or ()),
        query_start=row["query_start"],
        outcome=TargetOutcome(row["outcome"]) if row["outcome"] else None,
        # ``detail`` holds an OutcomeNote; before notes it held the words (kept as the error).
        note=OutcomeNote(row["detail"]) if row["detail"] in _NOTES else None,
        error=clean_optional(row.get("error") or (row["detail"] if row["detail"] not in _NOTES else None), TEXT_LIMIT),
    )


def _audit_entry(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        event=AuditEvent(row["event"]),
        request_id=row["request_id"],
        action=SignalAction(row["action"]) if row["action"] else None,
        target=clean_name_optional(row["target"]),
        role_name=clean_name_optional(row["role_name"], TEXT_LIMIT),
        pids=tuple(row["pids"] or ()),
        actor=row["actor"],
        requester=row["requester"],
        approvers=tuple(row["approvers"] or ()),
        outcome=clean_optional(row["outcome"], TEXT_LIMIT),
        message_ref=row["message_ref"],
        origin=clean_optional(row.get("origin"), 120),
        note=note_from_json(row.get("detail")),
    )
