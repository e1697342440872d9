"""``pgconn-bot check``: what is configured, what works, and precisely what is missing.

Every check prints one line: ✓ (fine), ! (works, but worth fixing) or ✗ (will not work). The exit
status is 1 when any ✗ was printed, so it can gate a deployment.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg
from psycopg.rows import dict_row
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.budget import Budget
from bot.config import Settings, missing_for
from bot.db.connect import connect_kwargs
from bot.db.requests import RequestStore
from bot.db.sql import state as state_sql
from bot.db.sql import targets as target_sql
from bot.db.state import StateStore, bot_role_members
from bot.db.targets import redact_dsn, server_address
from bot.errors import first_line
from bot.slack.gateway import SlackGroupDirectory, build_web_client, channel_info, token_info

# What the code calls, and so what the bot token must carry (manifest.yml lists the same).
NEEDED_SCOPES = ("commands", "usergroups:read", "chat:write", "chat:write.public", "channels:read", "groups:read")
CONNECT_SECONDS = 5


@dataclass
class Report:
    out: TextIO
    failures: int = 0
    warnings: int = 0
    lines: list[str] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self._say("✓", text)

    def warn(self, text: str) -> None:
        self.warnings += 1
        self._say("!", text)

    def fail(self, text: str) -> None:
        self.failures += 1
        self._say("✗", text)

    def _say(self, mark: str, text: str) -> None:
        line = f"{mark} {text}"
        self.lines.append(line)
        self.out.write(line + "\n")
        self.out.flush()


async def run_check(settings: Settings, out: TextIO) -> int:
    report = Report(out)
    out.write("pgconn-bot check\n")
    dsns = [*settings.target_dsns().values(), settings.state_dsn()]
    targets = settings.target_dsns()
    report.ok(f"settings: valid ({len(targets)} target{'s' if len(targets) != 1 else ''}: {', '.join(targets)})")
    _check_modes(settings, report)
    checks: list[tuple[str, Any]] = [
        (f"target {name}", _check_target(name, dsn, dsns, report, _budget_on(settings, dsn)))
        for name, dsn in targets.items()
    ]
    checks += [("state database", _check_state(settings, dsns, report))]
    checks += [("Slack", _check_slack(settings, report))]
    for label, check in checks:
        try:
            await check
        except Exception as exc:  # a check that breaks is a failed check, never a traceback
            report.fail(f"{label}: {redact_dsn(first_line(exc), dsns)}")
    summary = f"{report.failures} problem{'s' if report.failures != 1 else ''}, {report.warnings} warning" + (
        "s" if report.warnings != 1 else ""
    )
    out.write(("All good. " if not report.failures else "") + summary + "\n")
    return 1 if report.failures else 0


def _check_modes(settings: Settings, report: Report) -> None:
    """Ready exactly when ``serve``/``socket`` would start (the same ``missing_for``)."""
    has_token = settings.slack_bot_token is not None  # blank is unset (config)
    labels = {"serve": "serve (HTTP)", "socket": "socket (Socket Mode)"}
    ready = [labels[mode] for mode in labels if not missing_for(settings, mode)]
    if ready:
        report.ok("Slack modes ready: " + ", ".join(ready) + "; console always works")
    elif has_token:
        report.fail("SLACK_BOT_TOKEN is set, but neither SLACK_SIGNING_SECRET (serve) nor SLACK_APP_TOKEN (socket)")
    else:
        report.warn("no SLACK_BOT_TOKEN: only `pgconn-bot console` can run")
    if settings.monitor_interval > 0 and has_token and not settings.alert_channel:
        report.warn("the monitor runs, but PGCONN_ALERT_CHANNEL is not set: alerts are kept, not posted")
    if has_token and not settings.audit_channel:
        report.warn("PGCONN_AUDIT_CHANNEL is not set: the audit trail is kept in the database only")
    if not settings.approvers:
        report.warn("PGCONN_APPROVERS is empty: nobody can approve a kill/cancel request")


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        dsn, **connect_kwargs(dsn, connect_timeout=CONNECT_SECONDS, row_factory=dict_row)
    )


def _budget_on(settings: Settings, dsn: str) -> Budget:
    """What one replica opens on the server ``dsn`` points at (as far as the addresses tell)."""
    here = server_address(dsn)
    return Budget(
        targets=sum(1 for other in settings.target_dsns().values() if server_address(other) == here),
        pool=settings.pool_max_size,
        state_pool=settings.state_pool_max_size,
        state_here=server_address(settings.state_dsn()) == here,
    )


async def _check_target(name: str, dsn: str, dsns: list[str], report: Report, budget: Budget) -> None:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CONNECT_SECONDS + 1):
            conn = await _connect(dsn)
    except Exception as exc:
        report.fail(f"target {name}: not reachable: {redact_dsn(first_line(exc), dsns)}")
        return
    try:
        cur = await conn.execute(target_sql.PRIVILEGES)
        row = await cur.fetchone()
        assert row is not None
        elapsed = (time.perf_counter() - started) * 1000
        report.ok(f"target {name}: PostgreSQL {row['server_version']} as {row['login']}, reachable in {elapsed:.0f} ms")
        if row["superuser"]:
            report.warn(
                f"target {name}: {row['login']} is a superuser; it works, but run the bot with a least-privilege "
                "role (pgconn-bot setup-sql)"
            )
            report.ok(f"target {name}: drain possible (superuser)")
            return
        if row["sees_all"]:
            report.ok(f"target {name}: can see other sessions' details (pg_read_all_stats / pg_monitor)")
        else:
            report.fail(
                f"target {name}: cannot see other users' sessions: GRANT pg_monitor TO {row['login']} "
                "(kill/cancel are refused without it)"
            )
        if row["signals"]:
            report.ok(f"target {name}: can cancel/terminate other sessions (pg_signal_backend)")
        else:
            report.fail(f"target {name}: cannot signal other sessions: GRANT pg_signal_backend TO {row['login']}")
        cur = await conn.execute(target_sql.WHEN_FULL)
        full = await cur.fetchone()
        assert full is not None
        _report_when_full(name, row["login"], full, budget, report)
        await _report_drain(name, row["login"], conn, report)
    finally:
        await conn.close()


def _report_when_full(name: str, login: str, full: dict[str, Any], budget: Budget, report: Report) -> None:
    limit = full["role_limit"]
    if limit is not None and 0 <= limit < budget.per_replica:
        report.fail(
            f"target {name}: {login} has CONNECTION LIMIT {limit}, but one replica may open {budget.per_replica} "
            f"connections to this server (pgconn-bot setup-sql --targets {budget.targets} gives the limit to set)"
        )
    if full["version_num"] < 160000:
        report.warn(
            f"target {name}: PostgreSQL before 16 reserves no connection slots for the bot: when every slot is "
            "taken it keeps the connections it holds (a lifeline per target) and takes the first slot that frees"
        )
    elif full["may_use_reserved"] and full["reserved"] >= budget.when_full:
        report.ok(
            f"target {name}: when the server is full the bot still gets in "
            f"(reserved_connections = {full['reserved']}, pg_use_reserved_connections)"
        )
    elif full["may_use_reserved"]:
        report.warn(
            f"target {name}: reserved_connections = {full['reserved']}, but the bot needs {budget.when_full} of them "
            "when the server is full (a lifeline per target and its state connections)"
        )
    else:
        report.warn(
            f"target {name}: when every slot is taken, the bot keeps only the connections it holds: "
            f"GRANT pg_use_reserved_connections TO {login} and set reserved_connections = {budget.when_full} "
            "(pgconn-bot setup-sql)"
        )


async def _report_drain(name: str, login: str, conn: psycopg.AsyncConnection[Any], report: Report) -> None:
    """Whether ``/pgconn drain`` can work on this target: setup-sql --drain's function is in the
    database the target connects to, and the bot's role may execute it. Drain is optional, so its
    absence is a warning."""
    cur = await conn.execute(target_sql.DRAIN_SETUP)
    setup = await cur.fetchone()
    assert setup is not None
    database = conn.info.dbname
    if not setup["installed"]:
        report.warn(
            f"target {name}: drain is not set up in database {database} (optional: pgconn-bot setup-sql "
            "--drain DB…, its SQL run there by an administrator)"
        )
        return
    missing = [
        function
        for function, may in (
            (target_sql.DRAIN_FUNCTION, setup["may_execute"]),
            ("pgconn_drain.drainable()", setup["may_list"]),
        )
        if not may
    ]
    if missing:
        report.fail(
            f"target {name}: the bot's role may not execute {', '.join(f.split('(')[0] for f in missing)}: "
            + "; ".join(f"GRANT EXECUTE ON FUNCTION {f} TO {login}" for f in missing)
        )
        return
    try:
        cur = await conn.execute(target_sql.DRAINABLE)
        listed = await cur.fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        report.fail(f"target {name}: {first_line(exc)}: GRANT USAGE ON SCHEMA pgconn_drain TO {login}")
        return
    assert listed is not None
    databases = ", ".join(listed["databases"] or ()) or "none (it lists no database)"
    report.ok(f"target {name}: drain possible for databases {databases}")


async def _check_state(settings: Settings, dsns: list[str], report: Report) -> None:
    """What ``serve`` would find and do; ``check`` itself creates and migrates nothing."""
    dsn = settings.state_dsn()
    variable = settings.state_variable()
    try:  # first directly, for libpq's own reason if it fails
        async with asyncio.timeout(CONNECT_SECONDS + 1):
            conn = await _connect(dsn)
        await conn.close()
    except Exception as exc:
        report.fail(f"state database: not reachable ({variable}): {redact_dsn(first_line(exc), dsns)}")
        return
    store = StateStore(dsn, timeout=CONNECT_SECONDS)
    try:
        await store.open()
        there = await store.presence()
        place = f"database {there.database} on {there.where}"
        if not there.exists:
            if there.may_create:
                report.ok(
                    f"state database: {place}; schema pgconn is not there yet: `serve` creates it (version "
                    f"{there.latest}), the console only when a kill or cancel first needs it"
                )
            else:
                report.fail(
                    f"state database: {place}; the bot's role may not create schema pgconn there: "
                    f"GRANT CREATE ON DATABASE {there.database} TO <the bot's role> (or point {variable} elsewhere)"
                )
            return
        problem = await store.ownership_problem()
        if problem is not None:
            report.fail(f"state database: {problem}")
        elif there.version is None or there.version > there.latest:
            report.fail(
                f"state database: schema pgconn in {place} is at version {there.version}, which this bot "
                f"(version {there.latest}) does not know: a newer bot made it, or something else did"
            )
        elif there.version < there.latest:
            report.ok(
                f"state database: schema pgconn at version {there.version} in {place}; `serve` migrates it "
                f"to {there.latest} at start"
            )
        else:
            await _check_current_state(settings, store, place, report)
    except Exception as exc:
        report.fail(f"state database: {redact_dsn(first_line(exc), dsns)}")
    finally:
        await store.close()


async def _check_current_state(settings: Settings, store: StateStore, place: str, report: Report) -> None:
    async with store.connection() as conn:
        cur = await conn.execute(state_sql.STATE_CHECK)
        row = await cur.fetchone()
        members = await bot_role_members(conn)
    assert row is not None
    if not row["writable"]:
        report.fail(f"state database: schema pgconn in {place} exists but the bot's role cannot write to it")
        return
    report.ok(f"state database: schema pgconn at version {row['version']} in {place}, writable")
    await _check_outbox(settings, store, report)
    if members:
        report.warn(
            f"state database: {', '.join(members[:5])} can act as the bot's role (members of it), "
            "the audit trail included"
        )


async def _check_outbox(settings: Settings, store: StateStore, report: Report) -> None:
    if not settings.audit_channel:
        return
    stuck = await RequestStore(store, audit_channel=settings.audit_channel).undeliverable()
    if stuck.parked:
        report.fail(
            f"{stuck.parked} audit entr{'ies' if stuck.parked != 1 else 'y'} could not be delivered to "
            f"{settings.audit_channel} ({stuck.error}) since {stuck.since:%Y-%m-%d %H:%M} UTC; they are kept in "
            "pgconn.audit and retried hourly, and at once in a new PGCONN_AUDIT_CHANNEL"
        )


async def _check_slack(settings: Settings, report: Report) -> None:
    token = settings.bot_token()
    if not token:
        return
    client = build_web_client(token, settings.slack_api_url)
    try:
        auth, granted = await token_info(client)
    except SlackApiError as exc:
        report.fail(f"Slack: the bot token is not accepted ({_error(exc)})")
        return
    except Exception as exc:
        report.fail(f"Slack: cannot reach {settings.slack_api_url}: {first_line(exc)}")
        return
    report.ok(f"Slack: token valid for team {auth.get('team') or auth.get('team_id')}, bot user {auth.get('user_id')}")
    if granted is None:
        report.warn("Slack: could not read the token's scopes (no x-oauth-scopes header)")
    else:
        missing = [scope for scope in NEEDED_SCOPES if scope not in granted]
        if missing:
            report.fail(f"Slack: the token lacks scopes {', '.join(missing)} (reinstall the app from manifest.yml)")
        else:
            report.ok("Slack: every needed scope is granted")
    for label, channel in (
        ("approval", settings.approval_channel),
        ("audit", settings.audit_channel),
        ("alert", settings.alert_channel),
    ):
        if channel:
            await _check_channel(client, label, channel, report)
    for group in {p for p in (*settings.viewers, *settings.requesters, *settings.approvers) if p.startswith("S")}:
        try:
            members = await SlackGroupDirectory(client).members(group)
            report.ok(f"user group {group}: {len(members)} members")
        except SlackApiError as exc:
            report.fail(f"user group {group}: cannot be resolved ({_error(exc)})")


async def _check_channel(client: AsyncWebClient, label: str, channel: str, report: Report) -> None:
    try:
        conversation = await channel_info(client, channel)
    except SlackApiError as exc:
        error = _error(exc)
        if error == "missing_scope":
            report.warn(f"{label} channel {channel}: cannot be checked without channels:read / groups:read")
        else:
            report.fail(f"{label} channel {channel}: {error}")
        return
    name = conversation.get("name") or channel
    if conversation.get("is_archived"):
        report.fail(f"{label} channel #{name}: archived")
    elif conversation.get("is_member"):
        report.ok(f"{label} channel #{name}: the bot is a member and can post")
    elif conversation.get("is_private"):
        report.fail(f"{label} channel #{name}: private and the bot is not in it: /invite the bot there")
    else:
        report.ok(f"{label} channel #{name}: public; the bot can post (chat:write.public)")


def _error(exc: SlackApiError) -> str:
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    return str(data.get("error") or f"HTTP {exc.response.status_code}")
