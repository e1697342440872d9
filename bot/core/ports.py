"""What the core needs from the outside world, as Protocols the core owns.

The adapters in ``bot.db`` (PostgreSQL) and ``bot.slack`` (Slack) implement these without
importing them (structural typing); ``bot.runtime`` wires them together. The core sees only the
model's types and errors — ``StateUnavailableError`` from the state database,
``UnknownTargetError``/``TargetUnavailableError`` from a monitored server, ``AnnounceError``
from Slack — never a connection, a cursor, or a psycopg or Slack exception.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta
from typing import Protocol

from bot.model.activity import Connection, DatabaseLimit, RoleFill, RoleInfo, RoleNotFound, ServerActivity
from bot.model.alerts import Alert, Clearance, Finding, Snapshot
from bot.model.audit import AuditEntry, Delivery, NewAuditEntry, Undeliverable
from bot.model.digest import Digest
from bot.model.drains import Drain, DrainCheck, Undrained
from bot.model.errors import AnnounceError
from bot.model.history import Sample
from bot.model.ownership import ConnectHint, LinkCode, LinkSession, LinkSource, OwnedRole
from bot.model.requests import (
    Candidate,
    KillScope,
    NewRequest,
    Openings,
    Protection,
    RequestStatus,
    RequestTarget,
    SignalAction,
    SignalAttempt,
    SignalOutcome,
    SignalRequest,
)
from bot.model.servers import Fill, Link

# --- the monitored servers ----------------------------------------------------------------------


class TargetCatalog(Protocol):
    """Read-only questions about the monitored servers ("targets"), each answered on one
    connection. Raises UnknownTargetError, TargetUnavailableError (TargetBusyError when only slow)."""

    @property
    def names(self) -> list[str]: ...

    def remember_fill(self, target: str, fill: Fill) -> None:
        """How full the server was when the bot last looked (said when it cannot get in)."""

    async def role_sessions(self, target: str, role: str) -> tuple[RoleInfo, list[Connection]] | RoleNotFound: ...

    async def role_usage(self, target: str, role: str) -> tuple[RoleInfo, int, list[DatabaseLimit]] | RoleNotFound: ...

    async def idle_sessions(
        self, target: str, role: str, min_idle: timedelta | None
    ) -> tuple[RoleInfo, list[Connection], int] | RoleNotFound:
        """The role's idle sessions (longest idle first) and how many it has in all."""

    async def near_limit(self, target: str, threshold: float) -> tuple[list[RoleFill], list[DatabaseLimit]]:
        """Roles and databases at or above ``threshold`` of their connection limit, or with logins
        disabled (a limit of 0; a database that does not allow connections), fullest first."""

    async def activity(self, target: str) -> ServerActivity: ...

    def connect_hint(self, target: str) -> ConnectHint:
        """Where the target's roles log in (host, port, database; never a user or password)."""
        ...

    async def link_sessions(self, target: str) -> list[LinkSession]:
        """Every client session carrying a link code, with its login role."""
        ...


class Signaller(Protocol):
    """Finding sessions to signal, and signalling them. Finding raises like TargetCatalog;
    ``signal_backends`` never raises: every target comes back with an attempt."""

    async def candidates_by_pid(
        self, target: str, pids: Sequence[int], protection: Protection
    ) -> dict[int, Candidate]: ...

    async def candidates_of_role(
        self, target: str, role: str, idle_for: timedelta | None, protection: Protection
    ) -> tuple[RoleInfo, list[Candidate]] | RoleNotFound:
        """The role's sessions (``idle_for``: idle at least that long); none for a superuser."""

    async def candidates_of_database(self, target: str, database: str, protection: Protection) -> list[Candidate]:
        """Every client session on ``database`` (protected ones too: they are spared, reported)."""
        ...

    async def drain_check(self, target: str, database: str) -> DrainCheck: ...

    async def set_allow_connections(self, target: str, database: str, allow: bool) -> str | None:
        """ALLOW_CONNECTIONS of ``database``; None when done, else the server's reason."""
        ...

    async def still_on_query(self, target: str, targets: Sequence[RequestTarget]) -> set[int]:
        """The targets still running the query they ran when requested."""
        ...

    async def signal_backends(
        self,
        target: str,
        *,
        action: SignalAction,
        scope: KillScope,
        targets: Sequence[RequestTarget],
        protection: Protection,
        wait_seconds: float,
        same_query: bool = False,
    ) -> list[SignalAttempt]:
        """Signal each target only if it is still the approved session (checked in the statement);
        ``same_query``: and still runs the query it ran when requested (a cancel always checks)."""


class MonitoredServers(Protocol):
    """What the monitor asks of the monitored servers."""

    @property
    def names(self) -> list[str]: ...

    @property
    def timeout(self) -> float: ...

    def link(self, target: str) -> Link:
        """Whether the bot is connected to the target now (its lifeline), and if not, why."""

    def server_keys(self, target: str) -> tuple[str, ...]:
        """What says which server a target is on (targets sharing any key are one server)."""

    def remember_fill(self, target: str, fill: Fill) -> None: ...

    async def snapshot(
        self,
        target: str,
        *,
        label: str,
        idle_in_tx_seconds: float,
        long_query_seconds: float,
        budget: float,
        watched: Sequence[str] = (),
    ) -> Snapshot:
        """The server's state in one statement, taken through ``target`` and named ``label`` (the
        server's first target). ``watched``: roles whose counts it carries whatever their fill
        (for history). Raises like TargetCatalog."""


# --- the state database -------------------------------------------------------------------------


class LockedRequest(Protocol):
    """A request whose row is locked until the ``RequestStore.locked`` block ends (and commits)."""

    @property
    def request(self) -> SignalRequest: ...

    async def add_approval(self, approver: str) -> bool: ...

    async def set_status(self, status: RequestStatus, decided_by: str | None) -> bool: ...

    async def expire(self) -> bool: ...

    async def audit(self, entry: NewAuditEntry) -> None: ...

    async def audit_refusal(self, entry: NewAuditEntry) -> None:
        """Record a refusal, rate-limited per person (see ``RequestStore.append_refusal``)."""

    async def refused_before(self, actor: str) -> bool: ...

    async def reload(self) -> SignalRequest: ...


class RequestStore(Protocol):
    """Requests, approvals, their Slack messages and the audit trail. Every method raises
    StateUnavailableError when the state database does not answer."""

    @property
    def ready(self) -> bool:
        """Migrated: a bot started without its state database waits for that."""

    @property
    def replica(self) -> uuid.UUID: ...

    @property
    def audit_channel(self) -> str | None: ...

    async def openings(self, requester: str) -> Openings: ...

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
        """Store it with its audit entry (``posting``: not approvable until ``mark_posted``).
        ``per_minute``: a tighter cap on the requester's requests in the last minute (checked
        under the same lock). ``executing``: self-service — stored as executing at once, decided
        by that entry's actor, with that entry (never pending, so nobody else can decide it).
        Raises TooManyOpenRequests when the requester may not open another one now."""

    async def get(self, request_id: int) -> SignalRequest | None: ...

    def locked(self, request_id: int) -> AbstractAsyncContextManager[LockedRequest | None]: ...

    async def pending(self) -> list[SignalRequest]: ...

    async def mark_posted(self, request_id: int, channel: str, ts: str | None) -> tuple[SignalRequest, int] | None:
        """Approvable from now on (unless decided or withdrawn meanwhile): the request and its
        message_version."""

    async def adopt_message(self, request_id: int, channel: str, ts: str) -> None:
        """A click names the message it came from: proof it was posted."""

    async def withdraw(self, request_id: int, audit: NewAuditEntry) -> SignalRequest | None: ...

    async def finish(
        self, request_id: int, outcomes: Sequence[SignalOutcome], audit: NewAuditEntry
    ) -> SignalRequest: ...

    async def add_targets(self, request_id: int, targets: Sequence[RequestTarget]) -> SignalRequest: ...

    async def record_drain(self, target: str, database: str, request_id: int, drain_for: timedelta) -> Drain | None:
        """The drain in force from now; None when one was in force already."""
        ...

    async def drains_in_force(self, target: str | None = None) -> list[Drain]: ...

    async def due_undrains(self) -> list[Drain]: ...

    async def end_drain(self, drain_id: int, by: str | None, audit: NewAuditEntry) -> Drain | None:
        """Marked undrained with its audit entry, once; None when another process did."""
        ...

    async def begin_escalation(
        self, request_id: int, outcomes: Sequence[SignalOutcome], audit: NewAuditEntry
    ) -> SignalRequest | None:
        """The ladder's cancel step recorded; the request waits ('escalating') until escalate_at."""
        ...

    async def claim_escalation(self, request_id: int) -> SignalRequest | None:
        """The ladder's second step, for this process alone; None when another has it."""
        ...

    async def due_escalations(self, late_after: float) -> list[int]: ...

    async def close_overdue(
        self,
        *,
        interrupted_after: float,
        unposted_after: float,
        audit_for: Callable[[SignalRequest], NewAuditEntry],
    ) -> list[SignalRequest]: ...

    async def unsynced_messages(self) -> list[int]: ...

    async def claim_message_sync(
        self, request_id: int, owner: uuid.UUID, lease: float
    ) -> tuple[SignalRequest, str | None, int] | None:
        """The request, what its message shows and its message_version, if ``owner`` now holds
        the message's (committed) sync lease."""

    async def posted_as_shown(self, request_id: int, state: str, version: int) -> bool: ...

    async def message_shown(self, request_id: int, owner: uuid.UUID, state: str, version: int) -> bool: ...

    async def message_sync_failed(self, request_id: int, owner: uuid.UUID) -> None: ...

    async def release_message_sync(self, request_id: int, owner: uuid.UUID) -> None: ...

    async def claim_requester_notice(self, request_id: int) -> bool: ...

    async def release_requester_notice(self, request_id: int) -> None: ...

    async def append_refusal(self, entry: NewAuditEntry) -> bool: ...

    async def close_refusal_windows(self) -> int: ...

    async def recent_audit(self, limit: int) -> list[AuditEntry]: ...

    async def heartbeat(self) -> None: ...

    async def goodbye(self) -> None: ...

    async def claim_delivery(self, lease_seconds: float) -> Delivery | None: ...

    async def delivered(self, audit_id: int, ts: str | None) -> None: ...

    async def delivery_failed(self, audit_id: int, error: str, delay: float) -> None: ...

    async def park(self, audit_id: int, error: str, *, whole_channel: bool) -> None: ...

    async def trim(self, retention_seconds: float) -> dict[str, int]: ...

    async def retry_waiting(self) -> int: ...

    async def undeliverable(self) -> Undeliverable: ...

    async def next_delivery_due(self) -> tuple[float | None, int]: ...


class AlertReader(Protocol):
    """The monitor's alerts as commands read them. Raises StateUnavailableError."""

    @property
    def ready(self) -> bool: ...

    async def open_alerts(self) -> list[Alert]: ...

    async def get(self, alert_id: int) -> Alert | None: ...


class AlertStore(AlertReader, Protocol):
    """The monitor's alerts and its leader lease. Raises StateUnavailableError."""

    async def open_alerts_of(self, targets: Sequence[str]) -> dict[str, list[Alert]]: ...

    async def reconcile(
        self,
        target: str,
        findings: Sequence[Finding],
        clearances: Sequence[Clearance],
        refresh: dict[int, Finding],
        *,
        fence: tuple[uuid.UUID, int] | None = None,
    ) -> bool:
        """Open, refresh and resolve in one transaction; False (nothing written) when ``fence``
        (holder, epoch) no longer holds the leader lease."""

    async def hold_leadership(self, me: uuid.UUID, lease: float) -> int | None: ...

    async def release_leadership(self, me: uuid.UUID) -> None: ...

    async def unsettled(self, targets: Sequence[str] | None = None) -> list[Alert]: ...

    async def posted(self, alert: Alert, channel: str, ts: str) -> bool: ...

    async def resolve_unmonitored(self, targets: Sequence[str]) -> None: ...

    async def shown(self, alert: Alert) -> None: ...

    async def replied(self, alert: Alert) -> None: ...

    async def sync_failed(self, alert: Alert, retry_after: float | None) -> None: ...


class LockedAlert(Protocol):
    """An alert whose row is locked until the ``AlertDeskStore.locked`` block ends (and commits)."""

    @property
    def alert(self) -> Alert: ...

    async def acknowledge(self, by: str) -> bool:
        """``by`` is on it from now (False: the alert was resolved meanwhile)."""
        ...

    async def snooze(self, seconds: float, by: str) -> datetime:
        """The alert's problem (target, kind, subject) snoozed from now: until when."""
        ...

    async def unsnooze(self) -> datetime | None:
        """The problem's snooze ended now: until when it was to last (None: there was none)."""
        ...

    async def audit(self, entry: NewAuditEntry) -> None: ...

    async def reload(self) -> Alert: ...


class AlertDeskStore(AlertReader, Protocol):
    """Who is on which alert, and the snoozes of problems. Raises StateUnavailableError."""

    def locked(self, alert_id: int) -> AbstractAsyncContextManager[LockedAlert | None]: ...

    async def shown(self, alert: Alert) -> None:
        """Its message shows ``alert`` now (recorded only if that is still what the alert says)."""


class HistoryReader(Protocol):
    """The monitor's history as commands read it (``history``, ``status``). Raises
    StateUnavailableError."""

    @property
    def ready(self) -> bool: ...

    async def samples(
        self, targets: Sequence[str], since: timedelta, roles: Sequence[str] = ()
    ) -> tuple[datetime, list[Sample]]:
        """The state database's now, and the samples of the server recorded under any of
        ``targets`` (a server's targets) in the ``since`` before it, oldest first, each with the
        counts of ``roles`` only."""
        ...


class HistoryStore(HistoryReader, Protocol):
    """The monitor's history: written by the leader, thinned and trimmed by the housekeeper."""

    async def record(self, sample: Sample, *, fence: tuple[uuid.UUID, int]) -> bool:
        """One cycle's sample of one server (one INSERT); False (nothing written) when ``fence``
        no longer holds the leader lease."""
        ...

    async def thin(self, retention_seconds: float, batch: int = 100) -> dict[str, int]:
        """Rows older than the retention deleted, older ones merged as TIERS say, in batches; how
        many rows went, by kind."""
        ...


# --- Slack ---------------------------------------------------------------------------------------


class AlertAnnouncer(Protocol):
    """Where the monitor's alerts are shown (Slack in serve mode). Posting raises AnnounceError."""

    @property
    def can_post(self) -> bool: ...

    async def post_alert(self, alert: Alert, channel: str) -> str: ...

    async def update_alert(self, alert: Alert) -> None: ...

    async def reply_resolved(self, alert: Alert) -> None: ...

    async def delete_message(self, channel: str, ts: str) -> None: ...


class Announcer(AlertAnnouncer, Protocol):
    """Where requests, outcomes and audit entries are shown too. Posting raises AnnounceError."""

    async def post_request(self, request: SignalRequest, channel: str) -> str:
        """Post the approval message; returns its ts ("" if Slack did not say)."""

    async def update_request(self, request: SignalRequest) -> None: ...

    async def tell_requester(self, request: SignalRequest) -> None: ...

    async def post_audit(self, entry: AuditEntry, channel: str, request_message: str | None) -> str | None:
        """Post an audit entry; returns its ts."""

    async def tell_linked(self, code: LinkCode) -> None:
        """Tell ``code``'s user (a direct message) that their login proof was seen and they own the role."""

    async def post_notice(self, channel: str, result: Undrained) -> None:
        """Say something that happened by itself (a drain whose time was up) in a channel."""

    async def post_digest(self, channel: str, digest: Digest) -> str:
        """Post the daily digest; returns its ts."""


class GroupDirectory(Protocol):
    async def members(self, group_id: str) -> frozenset[str]:
        """Slack user IDs in the user group; raises on lookup failure."""


class NoAnnouncer:
    """No Slack (the console): nothing is posted anywhere; requests are decided with ``approve N``."""

    can_post = False

    async def tell_linked(self, code: LinkCode) -> None:
        return None

    async def post_notice(self, channel: str, result: Undrained) -> None:
        return None

    async def post_digest(self, channel: str, digest: Digest) -> str:
        return ""

    async def post_request(self, request: SignalRequest, channel: str) -> str:
        raise AnnounceError("no Slack in this mode")

    async def update_request(self, request: SignalRequest) -> None:
        return None

    async def tell_requester(self, request: SignalRequest) -> None:
        return None

    async def post_audit(self, entry: AuditEntry, channel: str, request_message: str | None) -> str | None:
        raise AnnounceError("no Slack in this mode")

    async def post_alert(self, alert: Alert, channel: str) -> str:
        raise AnnounceError("no Slack in this mode")

    async def update_alert(self, alert: Alert) -> None:
        return None

    async def reply_resolved(self, alert: Alert) -> None:
        return None

    async def delete_message(self, channel: str, ts: str) -> None:
        return None


class OwnershipStore(Protocol):
    """Role links and one-time link codes (the state database)."""

    @property
    def ready(self) -> bool: ...

    async def links_of(self, user_id: str) -> list[OwnedRole]: ...

    async def linked_owners(self, target: str, role: str) -> list[str]: ...

    async def link(
        self, user_id: str, target: str, role: str, role_oid: int, source: LinkSource, by: str, audit: NewAuditEntry
    ) -> bool:
        """Make the link with its audit entry; False when it existed (nothing recorded)."""
        ...

    async def unlink(self, user_id: str, target: str, role: str, audit: NewAuditEntry) -> LinkSource | None:
        """Remove the link with its audit entry (its note saying how the link had been made);
        None when there was none."""
        ...

    async def issue_code(
        self, code: str, user_id: str, target: str, role: str, role_oid: int, *, max_pending: int
    ) -> LinkCode | None:
        """A new pending code; None when the person has ``max_pending`` waiting already."""
        ...

    async def pending_codes(self, user_id: str | None = None) -> list[LinkCode]: ...

    async def use_code(self, code: LinkCode, audit: NewAuditEntry) -> bool:
        """The code used up and its user linked, at most once; False when it was not valid any more."""
        ...


class DigestStore(Protocol):
    """The daily digest's claim (one replica posts each day) and its numbers (the state database)."""

    @property
    def ready(self) -> bool: ...

    async def posted(self, day: date) -> bool: ...

    async def claim(self, day: date) -> bool:
        """The day's digest is this replica's to post; False when another has it or it is posted."""
        ...

    async def mark_posted(self, day: date, channel: str, ts: str | None) -> None: ...

    async def release(self, day: date) -> None: ...

    async def gather(self, day: date, since: datetime, until: datetime) -> Digest: ...
