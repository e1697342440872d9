"""Requests, approvals and the audit trail in the state database (PGCONN_STATE_URL).

Every change that matters happens in one transaction together with its audit entry (and, when an
audit channel is configured, the entry's place in the outbox), so the trail cannot miss a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from bot.core.results import Approval, AuditEntry, RequestTarget, RoleFill, SignalRequest
from bot.db import sql
from bot.db.state import StateStore
from bot.db.targets import Conn

# A message Slack keeps refusing to update (deleted, channel archived) is given up after about a
# day of backoff; the request itself and its audit trail are unaffected.
MAX_SYNC_ATTEMPTS = 20


@dataclass(frozen=True)
class NewRequest:
    action: str
    scope: str
    target: str
    role_name: str | None
    older_than: timedelta | None
    reason: str | None
    command_text: str
    requester: str
    requester_name: str | None
    required_approvals: int
    ttl_seconds: int
    origin_channel: str | None
    targets: Sequence[RequestTarget]
    fills: Sequence[RoleFill]


@dataclass(frozen=True)
class NewAuditEntry:
    event: str
    request_id: int | None = None
    action: str | None = None
    target: str | None = None
    role_name: str | None = None
    pids: Sequence[int] = ()
    actor: str | None = None
    requester: str | None = None
    approvers: Sequence[str] = ()
    outcome: str | None = None
    message_ref: str | None = None


@dataclass(frozen=True)
class Delivery:
    entry: AuditEntry
    channel: str
    attempts: int
    request_ref: str | None  # "channel/ts" of the request's message


@dataclass
class MessageSync:
    request: SignalRequest | None
    state: str | None
    _conn: Conn

    async def shown(self) -> None:
        assert self.request is not None and self.state is not None
        await self._conn.execute(sql.MESSAGE_SHOWN, {"id": self.request.id, "state": self.state})

    async def failed(self) -> None:
        assert self.request is not None
        await self._conn.execute(sql.MESSAGE_SYNC_FAILED, {"id": self.request.id})


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

    async def refused_before(self, actor: str) -> bool:
        cur = await self._conn.execute(sql.REFUSED_CLICK_SEEN, {"id": self.request.id, "actor": actor})
        return await cur.fetchone() is not None

    async def reload(self) -> SignalRequest:
        loaded = await self._store._load(self._conn, self.request.id, lock=False)
        assert loaded is not None
        self.request = loaded
        return loaded


class RequestStore:
    def __init__(self, state: StateStore, *, audit_channel: str | None) -> None:
        self._state = state
        self._audit_channel = audit_channel

    @property
    def audit_channel(self) -> str | None:
        return self._audit_channel

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        async with self._state.pool.connection() as conn, conn.transaction():
            yield conn

    # --- requests ----------------------------------------------------------------------------

    async def open_request(self, new: NewRequest, audit: NewAuditEntry) -> SignalRequest:
        async with self._transaction() as conn:
            cur = await conn.execute(
                sql.INSERT_REQUEST,
                {
                    "ttl": new.ttl_seconds,
                    "requester": new.requester,
                    "requester_name": new.requester_name,
                    "action": new.action,
                    "scope": new.scope,
                    "target": new.target,
                    "role_name": new.role_name,
                    "older_than": new.older_than,
                    "reason": new.reason,
                    "command_text": new.command_text,
                    "fills": Jsonb([{"role": f.role, "used": f.used, "limit": f.limit} for f in new.fills]),
                    "required_approvals": new.required_approvals,
                    "origin_channel": new.origin_channel,
                },
            )
            row = await cur.fetchone()
            assert row is not None
            request_id = int(row["id"])
            async with conn.cursor() as targets:
                await targets.executemany(
                    sql.INSERT_TARGET,
                    [
                        {
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
                        for t in new.targets
                    ],
                )
            await self.append_audit(_with_request_id(audit, request_id), conn)
            loaded = await self._load(conn, request_id, lock=False)
        assert loaded is not None
        return loaded

    async def get(self, request_id: int) -> SignalRequest | None:
        async with self._state.pool.connection() as conn:
            return await self._load(conn, request_id, lock=False)

    @contextlib.asynccontextmanager
    async def locked(self, request_id: int) -> AsyncIterator[LockedRequest | None]:
        """The request with its row locked until the block ends (and commits): one decision at a time."""
        async with self._transaction() as conn:
            request = await self._load(conn, request_id, lock=True)
            yield None if request is None else LockedRequest(request, conn, self)

    async def pending(self, limit: int = 50) -> list[SignalRequest]:
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.PENDING_REQUESTS, {"limit": limit})
            ids = [row["id"] for row in await cur.fetchall()]
            loaded = [await self._load(conn, request_id, lock=False) for request_id in ids]
        return [request for request in loaded if request is not None]

    async def set_message(self, request_id: int, channel: str, ts: str) -> None:
        async with self._state.pool.connection() as conn:
            await conn.execute(sql.SET_MESSAGE, {"id": request_id, "channel": channel, "ts": ts})

    async def adopt_message(self, request_id: int, channel: str, ts: str) -> None:
        async with self._state.pool.connection() as conn:
            await conn.execute(sql.ADOPT_MESSAGE, {"id": request_id, "channel": channel, "ts": ts})

    async def withdraw(self, request_id: int, audit: NewAuditEntry) -> SignalRequest | None:
        async with self._transaction() as conn:
            cur = await conn.execute(sql.WITHDRAW, {"id": request_id})
            if cur.rowcount == 1:
                await self.append_audit(audit, conn)
            return await self._load(conn, request_id, lock=False)

    async def finish(
        self, request_id: int, outcomes: Sequence[tuple[int, str, str | None]], audit: NewAuditEntry
    ) -> SignalRequest:
        async with self._transaction() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    sql.RECORD_OUTCOME,
                    [
                        {"request_id": request_id, "pid": pid, "outcome": outcome, "detail": detail}
                        for pid, outcome, detail in outcomes
                    ],
                )
            cur = await conn.execute(sql.FINISH, {"id": request_id})
            if cur.rowcount == 1:
                await self.append_audit(audit, conn)
            loaded = await self._load(conn, request_id, lock=False)
        assert loaded is not None
        return loaded

    async def close_overdue(
        self, *, interrupted_after: float, audit_for: Callable[[SignalRequest], NewAuditEntry]
    ) -> list[SignalRequest]:
        """Expire pending requests past their TTL and report executions cut off by a crash.

        ``audit_for(request)`` builds each one's audit entry; entries commit with the change.
        """
        closed: list[SignalRequest] = []
        async with self._transaction() as conn:
            cur = await conn.execute(sql.EXPIRE_DUE)
            ids = [row["id"] for row in await cur.fetchall()]
            cur = await conn.execute(sql.INTERRUPT_STALE, {"after": interrupted_after})
            ids += [row["id"] for row in await cur.fetchall()]
            for request_id in ids:
                request = await self._load(conn, request_id, lock=False)
                if request is not None:
                    await self.append_audit(audit_for(request), conn)
                    closed.append(request)
        return closed

    # --- the request message in Slack ---------------------------------------------------------

    async def unsynced_messages(self, limit: int = 20) -> list[int]:
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.UNSYNCED_MESSAGES, {"limit": limit, "max_attempts": MAX_SYNC_ATTEMPTS})
            return [row["id"] for row in await cur.fetchall()]

    async def message_state(self, request_id: int) -> str | None:
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.MESSAGE_STATE, {"id": request_id})
            row = await cur.fetchone()
            return str(row["state"]) if row else None

    @contextlib.asynccontextmanager
    async def syncing_message(self, request_id: int) -> AsyncIterator[MessageSync]:
        """The request as it stands, with the message lock held until the block ends."""
        async with self._state.pool.connection() as conn, conn.transaction():
            await conn.execute(sql.MESSAGE_LOCK_TIMEOUT)
            await conn.execute(sql.MESSAGE_LOCK, {"id": request_id})
            cur = await conn.execute(sql.MESSAGE_STATE, {"id": request_id})
            row = await cur.fetchone()
            request = await self._load(conn, request_id, lock=False)
            yield MessageSync(request, str(row["state"]) if row else None, conn)

    async def release_requester_notice(self, request_id: int) -> None:
        async with self._state.pool.connection() as conn:
            await conn.execute(sql.RELEASE_REQUESTER_NOTICE, {"id": request_id})

    async def message_shown(self, request_id: int, state: str) -> None:
        async with self._state.pool.connection() as conn:
            await conn.execute(sql.MESSAGE_SHOWN, {"id": request_id, "state": state})

    async def claim_requester_notice(self, request_id: int) -> bool:
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.CLAIM_REQUESTER_NOTICE, {"id": request_id})
            return cur.rowcount == 1

    # --- audit -------------------------------------------------------------------------------

    async def append_audit(self, entry: NewAuditEntry, conn: Conn | None = None) -> int:
        params = {
            "event": entry.event,
            "request_id": entry.request_id,
            "action": entry.action,
            "target": entry.target,
            "role_name": entry.role_name,
            "pids": list(entry.pids),
            "actor": entry.actor,
            "requester": entry.requester,
            "approvers": list(entry.approvers),
            "outcome": entry.outcome,
            "message_ref": entry.message_ref,
            "channel": self._audit_channel,
        }
        if conn is None:
            async with self._state.pool.connection() as own:
                cur = await own.execute(sql.APPEND_AUDIT, params)
                row = await cur.fetchone()
        else:
            cur = await conn.execute(sql.APPEND_AUDIT, params)
            row = await cur.fetchone()
        assert row is not None
        return int(row["id"])

    async def recent_audit(self, limit: int) -> list[AuditEntry]:
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.RECENT_AUDIT, {"limit": limit})
            return [_audit_entry(row) for row in await cur.fetchall()]

    async def claim_delivery(self, lease_seconds: float) -> Delivery | None:
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.CLAIM_AUDIT_DELIVERY, {"lease": lease_seconds})
            claim = await cur.fetchone()
            if claim is None:
                return None
            cur = await conn.execute(sql.SELECT_AUDIT_FOR_DELIVERY, {"id": claim["audit_id"]})
            row = await cur.fetchone()
            assert row is not None
            ref = f"{row['request_channel']}/{row['request_ts']}" if row["request_ts"] else row["message_ref"]
            return Delivery(_audit_entry(row), claim["channel"], claim["attempts"], ref)

    async def delivered(self, audit_id: int, ts: str | None) -> None:
        async with self._state.pool.connection() as conn:
            await conn.execute(sql.AUDIT_DELIVERED, {"id": audit_id, "ts": ts})

    async def delivery_failed(self, audit_id: int, error: str, delay: float) -> None:
        async with self._state.pool.connection() as conn:
            await conn.execute(sql.AUDIT_DELIVERY_FAILED, {"id": audit_id, "error": error[:500], "delay": delay})

    async def next_delivery_due(self) -> tuple[float | None, int]:
        """Seconds until the next undelivered audit entry is due (None: nothing waits), and how many wait."""
        async with self._state.pool.connection() as conn:
            cur = await conn.execute(sql.NEXT_AUDIT_DUE)
            row = await cur.fetchone()
        if row is None or not row["waiting"]:
            return None, 0
        return max(0.0, float(row["seconds"])), int(row["waiting"])

    # --- loading -----------------------------------------------------------------------------

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
            action=row["action"],
            scope=row["scope"],
            target=row["target"],
            role_name=row["role_name"],
            older_than=row["older_than"],
            reason=row["reason"],
            command_text=row["command_text"],
            requester=row["requester"],
            requester_name=row["requester_name"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            now=row["now"],
            status=row["status"],
            required_approvals=row["required_approvals"],
            approvals=approvals,
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            finished_at=row["finished_at"],
            channel=row["channel"],
            message_ts=row["message_ts"],
            targets=targets,
            fills=tuple(RoleFill(f["role"], int(f["used"]), int(f["limit"])) for f in row["fills"] or []),
        )


def _with_request_id(entry: NewAuditEntry, request_id: int) -> NewAuditEntry:
    return replace(entry, request_id=request_id)


def _target(row: dict[str, Any]) -> RequestTarget:
    return RequestTarget(
        pid=row["pid"],
        backend_start=row["backend_start"],
        role_oid=int(row["role_oid"]),
        role=row["role_name"],
        database=row["database"],
        application=row["application"],
        client=row["client"],
        state=row["state"],
        state_change=row["state_change"],
        xact_start=row["xact_start"],
        observed_at=row["observed_at"],
        blocks=tuple(row["blocks"] or ()),
        query_start=row["query_start"],
        outcome=row["outcome"],
        detail=row["detail"],
    )


def _audit_entry(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        event=row["event"],
        request_id=row["request_id"],
        action=row["action"],
        target=row["target"],
        role_name=row["role_name"],
        pids=tuple(row["pids"] or ()),
        actor=row["actor"],
        requester=row["requester"],
        approvers=tuple(row["approvers"] or ()),
        outcome=row["outcome"],
        message_ref=row["message_ref"],
    )
