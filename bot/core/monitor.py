"""The alert monitor: every cycle, one snapshot per target → findings → open/refresh/resolve alerts.

Alert state lives in the state database (one open row per target + kind + subject), so a
problem is posted once however many cycles it lasts, however often the bot restarts, and
whichever replica leads. Only the replica holding the leader lock runs cycles.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, assert_never

from bot import metrics
from bot.core.ports import AlertAnnouncer, AlertStore, HistoryStore, MonitoredServers
from bot.core.tasks import stop_task
from bot.errors import first_line, log_failure
from bot.model.alerts import Alert, AlertKind, Clearance, Finding, SessionOfNote, Severity, Shape, Snapshot
from bot.model.errors import AnnounceError, TargetBusyError, TargetUnavailableError
from bot.model.history import ALERT_SINCE, alert_line, line_is_fresh, sample_of
from bot.model.servers import Fill, Fullness
from bot.model.text import query_summary

log = logging.getLogger(__name__)

STOP_SECONDS = 2.0

WARNING, CRITICAL = Severity.WARNING, Severity.CRITICAL
# A target is reported down only after this many failed snapshots in a row: one slow answer is
# not an outage worth a critical alert and its "resolved" reply.
DOWN_AFTER_FAILURES = 2
# Server fill clears only this far below the warning threshold, so hovering around it does not
# post and resolve over and over.
FILL_HYSTERESIS = 0.05
STATE_CONCURRENCY = 2
# The leader's lease: a leader that stops making progress (dead, hung, cut off) stops renewing it
# and is replaced when it runs out, plus at most a sixth of it (how often the others try): within
# two intervals and within 30 s.
MAX_LEASE_SECONDS = 24.0
MIN_LEASE_SECONDS = 3.0


def leader_lease(interval: float) -> float:
    return max(MIN_LEASE_SECONDS, min(MAX_LEASE_SECONDS, 1.5 * interval))


@dataclass(frozen=True)
class MonitorThresholds:
    utilization_warn: float = 0.7
    utilization_critical: float = 0.9
    idle_in_tx_seconds: float = 300
    long_query_seconds: float = 1800
    # Alerts are channel posts: SQL text only with PGCONN_SHOW_QUERIES=everyone, else its keyword
    # and length (and only that is stored).
    query_text: bool = False


def _epoch(value: datetime | None) -> str:
    return str(int(value.timestamp())) if value is not None else "0"


def detect(snapshot: Snapshot, thresholds: MonitorThresholds, members: Sequence[str] | None = None) -> list[Finding]:
    """What is wrong on a server now (``members``: the targets on it; each problem is reported
    once, naming them). The shape stays the same while a problem lasts (numbers go in details)."""
    findings: list[Finding] = []
    databases = list(members or [snapshot.target])
    observed = snapshot.observed_at.isoformat()
    for role in snapshot.full_roles:
        over = role.used > role.limit
        findings.append(
            Finding(
                kind=AlertKind.ROLE_LIMIT,
                subject=role.role,
                severity=CRITICAL if over else WARNING,
                shape=Shape.OVER_LIMIT if over else Shape.AT_LIMIT,
                details={
                    "used": role.used,
                    "limit": role.limit,
                    "sessions": [session.as_details() for session in role.sessions],
                    "observed_at": observed,
                    "databases": databases,
                },
            )
        )
    fill = snapshot.fill
    if fill >= thresholds.utilization_warn:
        critical = fill >= thresholds.utilization_critical
        findings.append(
            Finding(
                kind=AlertKind.SERVER_FILL,
                subject="",
                severity=CRITICAL if critical else WARNING,
                shape=Shape.CRITICALLY_CLOSE if critical else Shape.CLOSE,
                details={
                    "client_backends": snapshot.client_backends,
                    "usable_slots": snapshot.usable_slots,
                    "max_connections": snapshot.max_connections,
                    "fill": round(fill, 4),
                    "databases": databases,
                },
            )
        )
    for session in snapshot.idle_in_transaction:
        findings.append(
            Finding(
                kind=AlertKind.IDLE_IN_TRANSACTION,
                subject=f"{session.pid}:{_epoch(session.xact_start or session.backend_start)}",
                severity=WARNING,
                shape=Shape.PLAIN,
                details={**_shown(session, thresholds), "observed_at": observed, "databases": databases},
            )
        )
    for query in snapshot.long_queries:
        findings.append(
            Finding(
                kind=AlertKind.LONG_QUERY,
                subject=f"{query.pid}:{_epoch(query.query_start)}",
                severity=WARNING,
                shape=Shape.PLAIN,
                details={**_shown(query, thresholds), "observed_at": observed, "databases": databases},
            )
        )
    return findings


def group_servers(names: Sequence[str], keys: Callable[[str], Sequence[str]]) -> dict[str, list[str]]:
    """Targets grouped by the server they are on, each group under its first target's name.

    ``keys``: what says which server a target is on (its configured address, its identity once the
    bot got in). Targets sharing any key are one server, so a group only grows as identities are
    learnt (lifelines connecting one by one on a full server), never splits: its alerts are never
    resolved and posted again because of the order in which the bot got in."""
    leader = {name: name for name in names}
    order = {name: index for index, name in enumerate(names)}

    def root(name: str) -> str:
        while leader[name] != name:
            name = leader[name] = leader[leader[name]]
        return name

    first: dict[str, str] = {}
    for name in names:
        for key in keys(name):
            if key not in first:
                first[key] = name
                continue
            a, b = root(first[key]), root(name)
            if a != b:  # the earlier-configured target leads the group
                leader[max(a, b, key=order.__getitem__)] = min(a, b, key=order.__getitem__)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(root(name), []).append(name)
    return {members[0]: members for members in groups.values()}


def full_finding(members: Sequence[str], exc: TargetUnavailableError) -> Finding:
    """The server refuses every new connection, the bot's included: known without a snapshot."""
    details: dict[str, Any] = {"full": True, "reason": exc.reason, "databases": list(members)}
    if exc.fill is not None:
        details |= {
            "client_backends": exc.fill.client_backends,
            "usable_slots": exc.fill.usable_slots,
            "max_connections": exc.fill.max_connections,
            "fill": round(exc.fill.client_backends / max(1, exc.fill.usable_slots), 4),
            "observed_at": exc.fill.observed_at.isoformat(),
        }
    return Finding(kind=AlertKind.SERVER_FILL, subject="", severity=CRITICAL, shape=Shape.FULL, details=details)


def _shown(session: SessionOfNote, thresholds: MonitorThresholds) -> dict[str, Any]:
    shown = session.as_details()
    if thresholds.query_text or session.query is None:
        return shown
    return {**shown, "query": query_summary(session.query, session.query_length)}


def clearance(alert: Alert, snapshot: Snapshot | None) -> Clearance:
    """An alert that cleared, with what the server looked like then (a fill alert says how full)."""
    if alert.kind is AlertKind.SERVER_FILL and snapshot is not None:
        return Clearance(
            alert.id,
            {
                "fill": round(snapshot.fill, 4),
                "client_backends": snapshot.client_backends,
                "usable_slots": snapshot.usable_slots,
            },
        )
    return Clearance(alert.id, {})


class DeliveryStep(enum.StrEnum):
    """What delivering an alert does in Slack."""

    POST = "post"  # a new top-level message: the problem is news
    EDIT = "edit"  # its message edited in place, quietly (a change of severity too: never a new message)
    RESOLVE = "resolve"  # its message edited to say so, and "resolved" replied in its thread
    HOLD = "hold"  # its problem is snoozed: not posted (again) until the snooze ends


def next_step(alert: Alert) -> DeliveryStep:
    """What an alert that is not shown as it stands needs (see ``sql.UNSETTLED_ALERTS``).

    A snooze holds only what would be news: a problem that cleared and came back within it is not
    posted again (nor is one whose first post is still to come); an alert already posted is still
    edited (quietly), and its resolution is still posted, snoozed or not."""
    if alert.resolved_at is not None:
        return DeliveryStep.RESOLVE
    if alert.message_ts is None:
        return DeliveryStep.HOLD if alert.snoozed else DeliveryStep.POST
    return DeliveryStep.EDIT


class Monitor:
    """Watches the servers every ``interval``: one snapshot per server, findings reconciled into
    alerts in the state database, alerts posted, edited and resolved in Slack. Only the replica
    holding the leader lease runs cycles; its writes and posts are fenced by the lease."""

    def __init__(
        self,
        *,
        servers: MonitoredServers,
        store: AlertStore,
        announcer: AlertAnnouncer,
        thresholds: MonitorThresholds,
        interval: float,
        channel: str | None,
        owners: Callable[[str, str], Awaitable[list[str]]] | None = None,
        drained: Callable[[str], Awaitable[bool]] | None = None,
        history: HistoryStore | None = None,
        watched: Sequence[str] = (),
    ) -> None:
        """``owners``: who owns a role on a target (self-service), named in a role-at-limit alert.
        ``drained``: whether a target's own database is drained now (then it is not "down").
        ``history``: where each cycle's sample of each server is kept (None: history is off);
        ``watched``: roles it keeps whatever their fill (protected, owned)."""
        self._history = history
        self._watched = tuple(watched)
        self._recording: list[asyncio.Task[bool]] = []  # this cycle's history rows being written
        self._owners = owners
        self._drained = drained
        self._servers = servers
        self._store = store
        self._announcer = announcer
        self._thresholds = thresholds
        self._interval = interval
        self._channel = channel
        self._me = uuid.uuid4()  # this process, as the holder of the leader lease
        self._lease = leader_lease(interval)
        self._epoch: int | None = None  # of the lease while this process holds it
        self._state_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures: dict[str, int] = {}  # consecutive cycles a target could not be reached
        self._slack_paused_until = 0.0  # after a 429, for every alert
        self._state_slots = asyncio.Semaphore(STATE_CONCURRENCY)
        self.cycles = 0

    @property
    def leader(self) -> bool:
        return self._epoch is not None

    # --- leadership ---------------------------------------------------------------------------

    async def _hold_leadership(self) -> bool:
        """Take or renew the leader lease; True while this process holds it."""
        was = self._epoch
        try:
            self._epoch = await self._store.hold_leadership(self._me, self._lease)
            self._state_error = None
        except Exception as exc:
            if first_line(exc) != self._state_error:  # once per change, not every few seconds
                log.warning("monitor cannot reach the state database: %s", first_line(exc))
            self._state_error = first_line(exc)
            self._epoch = None
        if self._epoch is not None and was is None:
            log.info("this replica now runs the monitor")
        elif was is not None and self._epoch is None:
            log.warning("this replica no longer runs the monitor (its lease was taken over)")
        return self._epoch is not None

    async def _drop_lock(self) -> None:
        """Give the lease up at once, so another replica can take over without waiting for it."""
        if self._epoch is not None:
            with contextlib.suppress(Exception):
                await self._store.release_leadership(self._me)
        self._epoch = None

    # --- cycles -------------------------------------------------------------------------------

    def servers(self) -> dict[str, list[str]]:
        """Targets grouped by the server they are on (see group_servers)."""
        return group_servers(self._servers.names, self._servers.server_keys)

    async def run_cycle(self) -> bool:
        """One cycle if this replica leads; returns whether it ran.

        Meanwhile the lease is renewed (a third of it at a time) for as long as a cycle that makes
        progress can take: a slow server's snapshot (its whole budget) must not cost a short lease
        the cycle's findings, while a cycle hung past that renews nothing and is replaced."""
        loop = asyncio.get_running_loop()
        allowed = loop.time() + self._servers.timeout * 2 + self._lease
        cycle = asyncio.create_task(self._cycle(), name="pgconn-monitor-cycle")
        try:
            while True:
                done, _ = await asyncio.wait({cycle}, timeout=self._lease / 3)
                if done:
                    return cycle.result()
                if self.leader and loop.time() < allowed:
                    await self._hold_leadership()
        except asyncio.CancelledError:
            cycle.cancel()
            raise

    async def _cycle(self) -> bool:
        if not self._store.ready or not await self._hold_leadership() or self._epoch is None:
            return False
        fence = (self._me, self._epoch)
        try:
            await self._store.resolve_unmonitored(self._servers.names)
        except Exception as exc:
            log_failure(log, logging.WARNING, "monitor could not resolve unmonitored alerts", exc=exc)
        started = time.perf_counter()
        # One snapshot per server; each server's alerts go out as soon as its own snapshot is in.
        await asyncio.gather(*(self._check_server(members, fence) for members in self.servers().values()))
        await self._recorded()
        if self.leader:
            await self.deliver()  # whatever is left (alerts of targets no longer monitored, say)
        self.cycles += 1
        metrics.MONITOR_CYCLE_SECONDS.observe(time.perf_counter() - started)
        with contextlib.suppress(Exception):
            counts = Counter(alert.kind for alert in await self._store.open_alerts())
            for kind in (
                AlertKind.ROLE_LIMIT,
                AlertKind.SERVER_FILL,
                AlertKind.IDLE_IN_TRANSACTION,
                AlertKind.LONG_QUERY,
                AlertKind.TARGET_DOWN,
            ):
                metrics.ALERTS_OPEN.labels(kind=kind).set(counts.get(kind, 0))
        return True

    async def _check_server(self, members: list[str], fence: tuple[uuid.UUID, int]) -> None:
        label = members[0]
        # From a target the bot is connected to, if any: a database that refuses the bot says
        # nothing about the server.
        source = next((m for m in members if self._servers.link(m).connected), label)
        snapshot: Snapshot | None = None
        findings: dict[str, list[Finding]] = {label: []}
        unreachable: dict[str, str] = {}  # target → why the bot cannot get in
        try:
            snapshot = await self._servers.snapshot(
                source,
                label=label,
                idle_in_tx_seconds=self._thresholds.idle_in_tx_seconds,
                long_query_seconds=self._thresholds.long_query_seconds,
                budget=self._servers.timeout * 2,
                watched=self._watched,
            )
            fill = Fill(snapshot.client_backends, snapshot.usable_slots, snapshot.max_connections, snapshot.observed_at)
            for member in members:
                self._servers.remember_fill(member, fill)
            findings[label] = detect(snapshot, self._thresholds, members)
        except TargetBusyError:
            return  # slow, not down: nothing can be said this cycle
        except TargetUnavailableError as exc:
            if exc.full is Fullness.SERVER:  # full: known at once, without a snapshot
                findings[label] = [full_finding(members, exc)]
            else:
                unreachable[source] = exc.reason
        except Exception:
            log.exception("monitor could not check the server of %s", ", ".join(members))
            return
        for member in members:
            lifeline = self._servers.link(member)
            if (
                member not in unreachable
                and not lifeline.connected
                and lifeline.error
                and lifeline.full is not Fullness.SERVER  # a full server is its own alert, not every target "down"
            ):
                unreachable[member] = lifeline.error
        for member in members:
            if member not in unreachable:
                self._failures.pop(member, None)
                continue
            self._failures[member] = failures = self._failures.get(member, 0) + 1
            if failures >= DOWN_AFTER_FAILURES and await self._is_drained(member):
                log.info("%s cannot be reached: its database is drained, so it is not down", member)
            elif failures >= DOWN_AFTER_FAILURES:
                findings.setdefault(member, []).append(
                    Finding(
                        kind=AlertKind.TARGET_DOWN,
                        subject="",
                        severity=CRITICAL,
                        shape=Shape.PLAIN,
                        details={"reason": unreachable[member]},
                    )
                )
        labels = sorted({label, *members})
        if snapshot is not None and self._history is not None:  # kept alongside the alerts, not before them
            self._recording.append(asyncio.create_task(self._record(snapshot, fence)))
        async with self._state_slots:
            try:
                open_alerts = await self._store.open_alerts_of(labels)
            except Exception as exc:
                log_failure(
                    log, logging.WARNING, "monitor could not read the alerts of %s", ", ".join(members), exc=exc
                )
                return
            for name in labels:
                # A target's own label holds only "not answering"; server-wide alerts are under the
                # server's (its first target's) name. Nothing found and nothing open: nothing to write.
                if name != label and not findings.get(name) and not open_alerts.get(name):
                    continue
                shown = snapshot if name == label else None
                found = findings.get(name, [])
                if shown is not None:
                    found = await self._with_history(members, found, open_alerts.get(name, []), shown)
                if not await self._reconcile(
                    name, open_alerts.get(name, []), shown, found, snapshot is not None, fence
                ):
                    return
        await self.deliver(labels)

    async def _is_drained(self, target: str) -> bool:
        if self._drained is None:
            return False
        try:
            return await self._drained(target)
        except Exception as exc:  # cannot tell: it is down, as far as anyone can see
            log_failure(log, logging.WARNING, "could not tell whether %s is drained", target, exc=exc)
            return False

    async def _recorded(self) -> None:
        """The history rows of this cycle (and any a cancelled cycle left) are written."""
        recording, self._recording = self._recording, []
        await asyncio.gather(*recording, return_exceptions=True)

    async def _record(self, snapshot: Snapshot, fence: tuple[uuid.UUID, int]) -> bool:
        """The server's sample of this cycle, kept under the fence; False when this replica no
        longer leads (a history that cannot be written is only logged)."""
        if self._history is None:
            return True
        try:
            async with self._state_slots:
                if await self._history.record(sample_of(snapshot, self._interval), fence=fence):
                    return True
        except Exception as exc:
            log_failure(log, logging.WARNING, "monitor could not record the history of %s", snapshot.target, exc=exc)
            return True
        log.warning("monitor cycle dropped: this replica no longer holds the leader lease")
        self._epoch = None
        return False

    async def _with_history(
        self, members: list[str], findings: list[Finding], open_alerts: list[Alert], snapshot: Snapshot
    ) -> list[Finding]:
        """Each role at its limit with its last 24 hours (``details["history"]``): read once for
        all of them, and again only when the line the open alert keeps is no longer fresh."""
        roles = [f.subject for f in findings if f.kind is AlertKind.ROLE_LIMIT]
        if self._history is None or not roles:
            return findings
        now = snapshot.observed_at
        kept = {a.subject: a.details.get("history") for a in open_alerts if a.kind is AlertKind.ROLE_LIMIT}
        lines = {role: kept[role] for role in roles if line_is_fresh(kept.get(role), now)}
        if stale := [role for role in roles if role not in lines]:
            try:
                _, samples = await self._history.samples(members, ALERT_SINCE, stale)
                samples.append(sample_of(snapshot, self._interval))  # this cycle's, written alongside
                lines |= {role: alert_line(samples, role, now) for role in stale}
            except Exception as exc:  # an alert without its history is still the alert
                log_failure(log, logging.WARNING, "could not read the history of %s", ", ".join(stale), exc=exc)
        return [
            replace(f, details={**f.details, "history": lines[f.subject]})
            if f.kind is AlertKind.ROLE_LIMIT and lines.get(f.subject)
            else f
            for f in findings
        ]

    async def _with_owners(self, finding: Finding) -> Finding:
        """A role at its limit names the role's owners, so they can free it themselves."""
        if finding.kind is not AlertKind.ROLE_LIMIT or self._owners is None:
            return finding
        owners: list[str] = []
        try:
            for target in finding.details.get("databases") or []:
                owners += [o for o in await self._owners(str(target), finding.subject) if o not in owners]
        except Exception as exc:  # an alert without its owners is still the alert
            log_failure(log, logging.WARNING, "could not find the owners of %s", finding.subject, exc=exc)
        return replace(finding, details={**finding.details, "owners": owners[:10]}) if owners else finding

    async def _reconcile(
        self,
        target: str,
        open_alerts: list[Alert],
        snapshot: Snapshot | None,
        findings: list[Finding],
        known: bool,
        fence: tuple[uuid.UUID, int],
    ) -> bool:
        """Record what this cycle found under ``target``; False when this replica no longer leads."""
        try:
            by_key = {(a.kind, a.subject): a for a in open_alerts}
            seen = {(f.kind, f.subject) for f in findings}
            if snapshot is not None and snapshot.fill >= self._thresholds.utilization_warn - FILL_HYSTERESIS:
                seen.add((AlertKind.SERVER_FILL, ""))  # still close: not resolved yet
            new = [await self._with_owners(f) for f in findings if (f.kind, f.subject) not in by_key]
            refresh = {by_key[(f.kind, f.subject)].id: f for f in findings if (f.kind, f.subject) in by_key}
            # While a server cannot be looked at nothing else about it can be known: its other alerts
            # stay open (a full server's fill alert speaks for itself).
            cleared = [
                clearance(a, snapshot)
                for a in open_alerts
                if (a.kind, a.subject) not in seen and (known or a.kind == AlertKind.TARGET_DOWN)
            ]
            if not await self._store.reconcile(target, new, cleared, refresh, fence=fence):
                log.warning("monitor cycle dropped: this replica no longer holds the leader lease")
                self._epoch = None
                return False
        except Exception as exc:
            log_failure(log, logging.WARNING, "monitor could not record alerts for %s", target, exc=exc)
        return True

    async def deliver(self, targets: Sequence[str] | None = None) -> None:
        """Post, edit and resolve in Slack whatever the alert table says is not yet shown (of
        ``targets``, or all). Each post is fenced: a replica that lost the lease posts nothing."""
        if not self._announcer.can_post or not self._channel:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._slack_paused_until:
            return
        for alert in await self._store.unsettled(targets):
            step = next_step(alert)
            # Renewed right before Slack is asked.
            if step is not DeliveryStep.HOLD and not await self._hold_leadership():
                return
            try:
                match step:
                    case DeliveryStep.RESOLVE:
                        await self._announcer.update_alert(alert)
                        await self._announcer.reply_resolved(alert)
                        await self._store.replied(alert)
                    case DeliveryStep.POST:
                        ts = await self._announcer.post_alert(alert, self._channel)
                        if not await self._store.posted(alert, self._channel, ts):
                            await self._announcer.delete_message(self._channel, ts)
                    case DeliveryStep.EDIT:
                        await self._announcer.update_alert(alert)
                        await self._store.shown(alert)
                    case DeliveryStep.HOLD:
                        continue
                    case _:
                        assert_never(step)
            except AnnounceError as exc:
                log.warning("alert %d not delivered: %s", alert.id, exc.reason)
                if exc.reason == "message_not_found" and alert.message_ts:
                    # Someone deleted the message: nothing left to edit or reply to.
                    await (self._store.replied(alert) if alert.resolved_at else self._store.shown(alert))
                    continue
                await self._store.sync_failed(alert, exc.retry_after)
                if exc.retry_after is not None:
                    self._slack_paused_until = loop.time() + exc.retry_after
                    return  # rate limited: every alert waits as long as Slack said
            except Exception as exc:  # one alert's trouble must not hold up the others
                log_failure(log, logging.WARNING, "alert %d not delivered", alert.id, exc=exc)
                with contextlib.suppress(Exception):
                    await self._store.sync_failed(alert, None)

    # --- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pgconn-monitor")

    async def stop(self) -> None:
        await stop_task(self._task, STOP_SECONDS)
        self._task = None
        for recording in self._recording:
            recording.cancel()
        await self._recorded()
        await self._drop_lock()

    async def _run(self) -> None:
        """Cycles every interval while this replica leads; meanwhile the leader renews its lease
        (a third of it at a time) and the others try to take it over (a sixth at a time). A
        leader whose cycle hangs renews nothing, and is replaced when its lease runs out."""
        loop = asyncio.get_running_loop()
        next_cycle = loop.time()
        while True:
            was_leader = self.leader
            if loop.time() >= next_cycle or (not was_leader and await self._hold_leadership()):
                next_cycle = loop.time() + self._interval
                try:
                    await self.run_cycle()
                except Exception as exc:
                    log_failure(log, logging.WARNING, "monitor cycle failed", exc=exc)
            elif was_leader:
                await self._hold_leadership()
            step = self._lease / 3 if self.leader else self._lease / 6
            await asyncio.sleep(max(0.0, min(step, next_cycle - loop.time()) if self.leader else step))
