"""Wiring: settings → pools, state store, policy, approvals, service. Shared by every mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from psycopg.conninfo import conninfo_to_dict

from bot.config import Settings
from bot.core.alertdesk import AlertDesk
from bot.core.approvals import ApprovalRules, Approvals
from bot.core.digest import DailyDigest
from bot.core.housekeeping import HOUSEKEEPING_SECONDS, Housekeeper
from bot.core.monitor import Monitor, MonitorThresholds
from bot.core.ownership import LinkWatcher, Ownership, OwnershipRules
from bot.core.policy import NoGroupDirectory, Policy
from bot.core.ports import AlertAnnouncer, Announcer, GroupDirectory, NoAnnouncer
from bot.core.service import CommandService, Thresholds
from bot.core.tasks import stop_task
from bot.db.alerts import AlertStore
from bot.db.catalog import TargetCatalog
from bot.db.digest import DigestStore
from bot.db.history import HistoryStore
from bot.db.monitoring import ServerWatch
from bot.db.ownership import OwnershipStore
from bot.db.requests import RequestStore
from bot.db.signals import Signaller
from bot.db.state import StatePresence, StateStore
from bot.db.targets import TargetPools
from bot.errors import first_line
from bot.model.access import AccessRole
from bot.model.errors import StateSchemaError
from bot.model.ownership import SelfService
from bot.redact import redact
from bot.render.alerts import summary

log = logging.getLogger(__name__)

FINAL_FLUSH_SECONDS = 1.5
STATE_RETRY_SECONDS = 2.0


def configured_logins(settings: Settings) -> set[str]:
    """The login roles named in the bot's connection strings (any replica's, whether or not this
    one has connected yet); the roles its connections actually use are learnt as they connect."""
    users = set()
    for dsn in (*settings.target_dsns().values(), settings.state_dsn()):
        with contextlib.suppress(Exception):
            if user := conninfo_to_dict(dsn).get("user"):
                users.add(str(user))
    return users


def _is_state_database(settings: Settings, targets: TargetPools, target: str, database: str) -> bool:
    """Whether ``database`` on ``target``'s server is where the bot keeps its state."""
    try:
        state = conninfo_to_dict(settings.state_dsn())
    except Exception:
        return False
    host, port, _ = targets.address(target)
    state_db = state.get("dbname") or state.get("user")
    same_server = (state.get("host") or None) == host and str(state.get("port") or "5432") == (port or "5432")
    return same_server and state_db == database


def watched_roles(settings: Settings) -> tuple[str, ...]:
    """Roles history keeps whatever their fill: the protected ones and those PGCONN_ROLE_OWNERS
    gives owners (roles linked with ``link`` are kept while at half their limit, like any other)."""
    owned = {role for by_target in settings.role_owners.values() for roles in by_target.values() for role in roles}
    return tuple(sorted({*settings.protected_roles, *owned}))


async def _drained(targets: TargetPools, approvals: Approvals, target: str) -> bool:
    """Whether ``target``'s own database is drained (through any target on its server)."""
    host, port, database = targets.address(target)
    for drain in await approvals.drains_in_force():
        other_host, other_port, _ = targets.address(drain.target)
        if drain.database == database and (other_host, other_port) == (host, port):
            return True
    return False


@dataclass
class Runtime:
    """Everything one process runs, wired from settings: pools, stores, policy, approvals, the
    monitor, the housekeeper and the command service. Built once by serve, socket and console."""

    settings: Settings
    targets: TargetPools
    state: StateStore
    approvals: Approvals
    housekeeper: Housekeeper
    monitor: Monitor
    service: CommandService
    background: bool = False
    _migrating: asyncio.Task[None] | None = None
    # Set when the bot must not go on (a state schema someone else owns, found after a degraded
    # start): serve stops with ``fatal_reason``.
    fatal: asyncio.Event = field(default_factory=asyncio.Event)
    fatal_reason: str | None = None
    # Started with ``create_state=False`` and schema pgconn is not there: nothing created yet.
    state_absent: bool = False
    link_watcher: LinkWatcher | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        groups: GroupDirectory | None = None,
        announcer: Announcer | None = None,
        alert_announcer: AlertAnnouncer | None = None,
        *,
        housekeeping_seconds: float = HOUSEKEEPING_SECONDS,
    ) -> Runtime:
        """Connect the core to its adapters. ``groups``/``announcer``/``alert_announcer``: Slack's
        (serve and socket); without them user groups grant nothing and nothing is posted (console).
        Opens nothing: ``start`` does."""
        targets = TargetPools(
            settings.target_dsns(), command_timeout=settings.command_timeout, max_size=settings.pool_max_size
        )
        state = StateStore(settings.state_dsn(), max_size=settings.state_pool_max_size)
        policy = Policy(
            viewers=settings.viewers,
            requesters=settings.requesters,
            approvers=settings.approvers,
            default_role=AccessRole[settings.default_role.upper()],
            groups=groups or NoGroupDirectory(),
        )
        store = RequestStore(state, audit_channel=settings.audit_channel)
        approvals = Approvals(
            signaller=Signaller(targets),
            store=store,
            policy=policy,
            rules=ApprovalRules(
                ttl_seconds=settings.approval_ttl,
                required_approvals=settings.required_approvals,
                allow_self_approval=settings.allow_self_approval,
                protected_roles=settings.protected_roles,
                approval_channel=settings.approval_channel,
                max_open_per_requester=settings.max_pending_per_user,
            ),
            announcer=announcer or NoAnnouncer(),
            bot_roles=lambda: targets.logins | state.logins | configured_logins(settings),
            inline_escalation=announcer is None,  # the console: nothing runs between its commands
            state_database=lambda target, database: _is_state_database(settings, targets, target, database),
        )
        ownership = Ownership(
            store=OwnershipStore(state, store),
            catalog=TargetCatalog(targets),
            approvals=approvals,
            policy=policy,
            rules=OwnershipRules(
                configured={
                    user: {where: frozenset(roles) for where, roles in by_target.items()}
                    for user, by_target in settings.role_owners.items()
                },
                self_service=SelfService(settings.self_service),
                protected_roles=settings.protected_roles,
            ),
            announcer=announcer or NoAnnouncer(),
            watching=announcer is not None,
        )
        alerts = AlertStore(state, store)  # audits acknowledgements and snoozes through ``store``
        history = HistoryStore(state)
        monitor = Monitor(
            servers=ServerWatch(targets),
            store=alerts,
            announcer=alert_announcer or NoAnnouncer(),
            thresholds=MonitorThresholds(
                utilization_warn=settings.alert_utilization_warn,
                utilization_critical=settings.alert_utilization_crit,
                idle_in_tx_seconds=settings.alert_idle_in_tx_seconds,
                long_query_seconds=settings.alert_long_query_seconds,
                query_text=settings.show_queries == "everyone",
            ),
            interval=settings.monitor_interval,
            channel=settings.alert_channel,
            owners=ownership.owners_of,
            drained=lambda target: _drained(targets, approvals, target),
            history=history if settings.history_retention else None,
            watched=watched_roles(settings),
        )
        digest = DailyDigest(
            DigestStore(state, store.replica),
            announcer or NoAnnouncer(),
            channel=settings.digest_channel,
            at=settings.digest_time,
        )
        housekeeper = Housekeeper(
            approvals,
            store,
            digest=digest,
            interval=housekeeping_seconds,
            retention_seconds=settings.state_retention.total_seconds(),
            history=history,
            history_retention_seconds=settings.history_retention.total_seconds(),
        )
        approvals.set_audit_hook(housekeeper.wake)
        service = CommandService(
            catalog=TargetCatalog(targets),
            policy=policy,
            thresholds=Thresholds(settings.alert_utilization_warn, settings.alert_utilization_crit),
            approvals=approvals,
            alerts=alerts,
            monitoring=settings.monitor_interval > 0,
            show_queries=settings.show_queries,
            describe_alert=summary,
            ownership=ownership,
            history=history,
            servers_of=lambda target: next((m for m in monitor.servers().values() if target in m), [target]),
            history_retention=settings.history_retention,
            alert_desk=AlertDesk(alerts, alert_announcer or NoAnnouncer(), on_audit=housekeeper.wake),
        )
        return cls(
            link_watcher=LinkWatcher(ownership, announcer or NoAnnouncer()),
            settings=settings,
            targets=targets,
            state=state,
            approvals=approvals,
            housekeeper=housekeeper,
            monitor=monitor,
            service=service,
        )

    async def start(
        self,
        *,
        require_state: bool = True,
        background: bool = False,
        state_wait: float | None = None,
        create_state: bool = True,
    ) -> None:
        """``background``: run expiry, message updates, audit delivery and the monitor (serve, socket).
        ``state_wait``: how long to wait for a state connection (default 10 s, or 2 s when the bot
        can carry on without state). ``create_state=False`` (the console): a state schema that is
        not there yet is left alone until ``prepare_state`` (the first command that writes)."""
        await self.targets.open()
        await self.state.open()
        if state_wait is None:
            state_wait = 10.0 if require_state else 2.0  # console mode carries on without state
        try:
            if not create_state and not (await self.state.presence()).exists:
                self.state_absent = True  # left alone: prepare_state creates it when first needed
            else:
                await self.state.migrate(wait_seconds=state_wait)
        except StateSchemaError:
            raise  # someone else's schema: never used, never retried
        except Exception as exc:
            if require_state:
                raise
            reason = await self.state.unreachable_reason() or redact(first_line(exc))
            log.warning(
                "state database (%s) unavailable: %s; commands that need no state work now, the rest once it answers%s",
                self.settings.state_variable(),
                reason,
                " (retried every few seconds)" if background else "",
            )
            if background:
                self._migrating = asyncio.create_task(self._keep_migrating(), name="pgconn-migrate")
        if background and not self.background:
            self.housekeeper.start()
            if self.settings.monitor_interval > 0:
                self.monitor.start()
            if self.link_watcher is not None:
                self.link_watcher.start()
            self.background = True

    async def prepare_state(self) -> StatePresence:
        """Create (or bring up to date) the state schema now; says where it is."""
        await self.state.migrate()
        self.state_absent = False
        return await self.state.presence()

    async def _keep_migrating(self) -> None:
        """Started without its state database (a full server, one that comes up later): keep trying."""
        while not self.state.ready:
            await asyncio.sleep(STATE_RETRY_SECONDS)
            try:
                await self.state.migrate(wait_seconds=STATE_RETRY_SECONDS)
            except StateSchemaError as exc:
                log.error("%s", exc)
                self.fatal_reason = str(exc)
                self.fatal.set()
                return
            except Exception as exc:
                log.debug("state database still unavailable: %s", redact(str(exc)))
        log.warning("the state database answers again: requests, approvals, audit and alerts work")

    async def stop(self) -> None:
        """Stop the background work (the monitor hands its lease over at once), flush the audit
        outbox once, say goodbye (this replica's leases free at once) and close the pools."""
        await stop_task(self._migrating, 1.0)
        await self.approvals.stop()  # a ladder's second step signalling may finish, then be flushed
        if self.background:
            # The monitor's stop releases the leader lock at once, so another replica can take over.
            await asyncio.gather(
                self.housekeeper.stop(),
                self.monitor.stop(),
                self.link_watcher.stop() if self.link_watcher is not None else asyncio.sleep(0),
            )
            # One last try to get what is in the audit outbox to Slack before going.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.housekeeper.deliver_audit(), timeout=FINAL_FLUSH_SECONDS)
            await self.housekeeper.goodbye()
            self.background = False
        await asyncio.gather(self.targets.close(), self.state.close(), return_exceptions=True)
