"""Background work of serve/socket mode: expiry, message updates, audit delivery.

Everything it does is claimed atomically in the state database, so any number of replicas can
run it side by side, and whatever one left unfinished (a crash, a Slack outage) another picks up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from bot.core.approvals import INTERRUPTED_AFTER_SECONDS, UNPOSTED_AFTER_SECONDS, Approvals, audit_for_closed
from bot.core.digest import DailyDigest
from bot.core.ports import HistoryStore, RequestStore
from bot.core.tasks import stop_task
from bot.errors import first_line, log_failure
from bot.model.errors import AnnounceError

log = logging.getLogger(__name__)

STOP_SECONDS = 2.0

HOUSEKEEPING_SECONDS = 2.0
DELIVERY_LEASE_SECONDS = 30.0
TRIM_EVERY_SECONDS = 3600.0
HEARTBEAT_SECONDS = 2.0  # see sql.REPLICA_SILENCE
DEFAULT_RETENTION_SECONDS = 90 * 86400.0
DEFAULT_HISTORY_RETENTION_SECONDS = 14 * 86400.0
UNKNOWN_ERROR_ATTEMPTS = 5  # an entry Slack keeps refusing with an error the bot does not know: parked
MAX_BACKOFF_SECONDS = 300.0


def backoff(attempts: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    return min(MAX_BACKOFF_SECONDS, 2.0 ** max(0, attempts - 1))


class Housekeeper:
    """What keeps the approval flow true in the background (serve and socket): expiring requests,
    withdrawing ones a crash left unposted, reporting executions a crash cut off, bringing
    messages up to date, delivering the audit outbox, trimming, and this replica's heartbeat.
    Every step is claimed in the state database, so any number of replicas run it side by side."""

    def __init__(
        self,
        approvals: Approvals,
        store: RequestStore,
        *,
        interval: float = HOUSEKEEPING_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        digest: DailyDigest | None = None,
        history: HistoryStore | None = None,
        history_retention_seconds: float = DEFAULT_HISTORY_RETENTION_SECONDS,
    ) -> None:
        """``history``: the monitor's history, thinned and trimmed with the rest (kept
        ``history_retention_seconds``; 0: none)."""
        self._history = history
        self._history_retention = history_retention_seconds
        self._digest = digest
        self._approvals = approvals
        self._store = store
        self._interval = interval
        self._retention = retention_seconds
        self._trimmed_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None
        self.undelivered = 0
        self.undeliverable = 0

    def wake(self) -> None:
        self._wake.set()

    @property
    def replica(self) -> uuid.UUID:
        """This process, as the holder of leases (its heartbeat row in pgconn.replica)."""
        return self._store.replica

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pgconn-housekeeper")
        self._beating = asyncio.create_task(self._beat(), name="pgconn-heartbeat")

    async def _beat(self) -> None:
        """This replica is alive, every HEARTBEAT_SECONDS, whatever else it is busy with: the leases
        it holds (audit entries being posted, messages being updated) count only while it beats."""
        while True:
            if self._store.ready:
                try:
                    await self._store.heartbeat()
                except Exception as exc:
                    log.debug("heartbeat not recorded: %s", first_line(exc))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _fresh_start(self) -> None:
        """At start, every waiting audit entry is tried at once: parked ones (the channel may have
        been fixed) and those a previous process had backed off (Slack may be back)."""
        with contextlib.suppress(Exception):
            if waiting := await self._store.retry_waiting():
                log.info("%d waiting audit entries are tried again", waiting)

    async def stop(self) -> None:
        await asyncio.gather(stop_task(self._task, STOP_SECONDS), stop_task(self._beating, STOP_SECONDS))
        self._task = self._beating = None

    async def goodbye(self) -> None:
        """After the last flush: leases this replica still holds are free for the others at once."""
        with contextlib.suppress(Exception):
            await self._store.goodbye()

    async def run_once(self) -> None:
        """One round of everything (raises what the state database raises; ``_run`` logs it)."""
        if not self._store.ready:
            return  # started without its state database: nothing to keep yet
        closed = await self._store.close_overdue(
            interrupted_after=INTERRUPTED_AFTER_SECONDS,
            unposted_after=UNPOSTED_AFTER_SECONDS,
            audit_for=audit_for_closed,
        )
        for request in closed:
            log.info("request #%d %s", request.id, request.status)
        # Drains whose time is up (a forgotten drain must not become an outage).
        await self._approvals.undrain_due()
        if self._digest is not None:
            await self._digest.run_once()
        # Ladders whose grace time is over and whose process is gone (or never waited): once each.
        for request_id in await self._store.due_escalations(INTERRUPTED_AFTER_SECONDS):
            await self._approvals.escalate(request_id)
        ids = {request.id for request in closed} | set(await self._store.unsynced_messages())
        for request_id in sorted(ids):
            await self._approvals.publish(request_id)
        await self._store.close_refusal_windows()
        await self.deliver_audit()
        await self.trim()

    async def trim(self, *, now: bool = False) -> dict[str, int] | None:
        """Once an hour (or ``now``): what is done and older than the retention goes."""
        loop = asyncio.get_running_loop()
        if not now and self._trimmed_at is not None and loop.time() - self._trimmed_at < TRIM_EVERY_SECONDS:
            return None
        self._trimmed_at = loop.time()
        trimmed = await self._store.trim(self._retention)
        if self._history is not None:  # the monitor's history: thinned as it ages, gone after its retention
            trimmed |= await self._history.thin(self._history_retention)
        if any(trimmed.values()):
            log.info("state trimmed: %s", ", ".join(f"{n} {kind}" for kind, n in trimmed.items() if n))
        return trimmed

    async def deliver_audit(self) -> None:
        """Post due audit entries to the audit channel configured now, oldest first; stop at the
        first failure that may pass (it holds back the rest). An entry Slack will never take is
        parked as undeliverable (kept, counted, retried now and then) and delivery goes on."""
        announcer = self._approvals.announcer
        channel = self._store.audit_channel
        if not announcer.can_post or channel is None:
            return
        while (delivery := await self._store.claim_delivery(DELIVERY_LEASE_SECONDS)) is not None:
            entry = delivery.entry
            try:
                ts = await announcer.post_audit(entry, channel, delivery.request_ref)
            except asyncio.CancelledError:
                # Stopping: give the entry back now rather than when the lease runs out. If Slack
                # did take it, it may appear twice; never zero times.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.delivery_failed(entry.id, "interrupted by shutdown", 0))
                raise
            except Exception as exc:
                failure = exc if isinstance(exc, AnnounceError) else AnnounceError(first_line(exc))
                if failure.permanent is None and not failure.known and delivery.attempts >= UNKNOWN_ERROR_ATTEMPTS:
                    failure.permanent = "message"  # an error nobody knows to pass: not in everyone's way
                if failure.permanent is not None:
                    log.error(
                        "audit entry %d cannot be delivered to %s (%s); parked%s",
                        entry.id,
                        channel,
                        failure.reason,
                        " with everything else waiting for that channel" if failure.permanent == "channel" else "",
                    )
                    await self._store.park(entry.id, failure.reason, whole_channel=failure.permanent == "channel")
                    continue
                delay = backoff(delivery.attempts, failure.retry_after)
                log.warning(
                    "audit entry %d not delivered to %s (attempt %d: %s); retrying in %.0fs",
                    entry.id,
                    channel,
                    delivery.attempts,
                    failure.reason,
                    delay,
                )
                await self._store.delivery_failed(entry.id, failure.reason, delay)
                return
            await self._store.delivered(entry.id, ts)

    async def _run(self) -> None:
        await self._fresh_start()
        while True:
            try:
                await self.run_once()
                if self._store.ready:
                    due, self.undelivered = await self._store.next_delivery_due()
                    self.undeliverable = (await self._store.undeliverable()).parked
                else:
                    due = None  # no schema to read yet: the state database is still being prepared
            except Exception as exc:
                log_failure(log, logging.WARNING, "housekeeping failed", exc=exc)
                due = None
            timeout = self._interval if due is None else min(self._interval, max(0.05, due))
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 a cancel arriving as wake() is set can be swallowed,
                # and the housekeeper would outlive its stop.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
