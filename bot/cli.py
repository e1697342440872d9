"""``pgconn-bot`` / ``python -m bot``: serve, socket, console, check, setup-sql, drop-state."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import Any

from bot import __version__
from bot.config import ConfigError, Settings, load_settings, require
from bot.errors import first_line
from bot.logs import LOG_FIELDS
from bot.redact import RedactingFilter, redact
from bot.setup_sql import add_drain_argument

log = logging.getLogger("bot")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_FIELDS:  # structured fields passed with extra={...}
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(record.exc_text or self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, *, console: bool = False) -> None:
    """Logs on stderr. ``console``: warnings and errors only (unless PGCONN_LOG_LEVEL=DEBUG), so
    the answers on stdout are not mixed with what the bot does to give them."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("WARNING" if console and settings.log_level == "INFO" else settings.log_level)
    # psycopg_pool logs every failed reconnect attempt; the bot reports unreachable targets itself.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


_DATABASES = """\
  PGCONN_DATABASE_URL   the PostgreSQL server to manage (libpq URL or key=value; empty: libpq's
                        defaults, PGHOST etc.); PGCONN_TARGETS adds more: {"name": "postgresql://…"}
  PGCONN_STATE_URL      where the bot keeps requests, the audit trail and alerts (schema pgconn);
                        default: PGCONN_DATABASE_URL"""

_MODE_HELP = {
    "serve": f"""\
Serve Slack over HTTP: slash commands, buttons and App Home arrive at POST /slack/events on $PORT
(default 3000); /healthz and /metrics on the same port. Slack must reach that URL (manifest.yml).

needs:
  SLACK_BOT_TOKEN       the Bot User OAuth Token (xoxb-…)
  SLACK_SIGNING_SECRET  Basic Information → App Credentials → Signing Secret
{_DATABASES}""",
    "socket": f"""\
Connect to Slack over Socket Mode: no public URL needed (enable Socket Mode in the app's settings).
/healthz and /metrics on $PORT (default 3000).

needs:
  SLACK_BOT_TOKEN       the Bot User OAuth Token (xoxb-…)
  SLACK_APP_TOKEN       an app-level token with connections:write (xapp-…)
{_DATABASES}""",
    "console": f"""\
The same commands and answers in a terminal, no Slack needed: list, limit, limits, stray, status,
kill/cancel (a request) and approve/deny. Reading creates nothing; the first kill or cancel creates
the bot's state (schema pgconn) and says where.

uses:
{_DATABASES}
  PGCONN_VIEWERS, PGCONN_REQUESTERS, PGCONN_APPROVERS  who may do what (`as <ID>` switches identity)""",
    "check": f"""\
Check the settings, each database (reachable, privileges, what happens when the server is full), the
state schema (what `serve` would create or migrate; check itself changes nothing) and Slack (token,
scopes, channels). One line per finding; exit 1 when anything would not work.

reads:
{_DATABASES}
  SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN, PGCONN_*_CHANNEL""",
    "drop-state": f"""\
Remove the bot's own state: schema pgconn in the state database, with every request, the audit
trail and the alerts. Asks first (or --yes); refused while a replica of the bot is running on it.
The SQL, if you prefer: DROP SCHEMA pgconn CASCADE; (as the bot's role or a superuser).

reads:
{_DATABASES}""",
}

_SEE_ALSO = "Run `pgconn-bot check` first: it says what is missing, and exits non-zero until it works."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgconn-bot", description="PostgreSQL connection management from Slack and a terminal."
    )
    parser.add_argument("--version", action="version", version=f"pgconn-bot {__version__}")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    raw = argparse.RawDescriptionHelpFormatter
    sub.add_parser(
        "serve",
        help="HTTP mode: Slack's Events API on $PORT, path /slack/events",
        description=_MODE_HELP["serve"],
        epilog=_SEE_ALSO,
        formatter_class=raw,
    )
    sub.add_parser(
        "socket",
        help="Socket Mode (SLACK_APP_TOKEN): no public URL needed",
        description=_MODE_HELP["socket"],
        epilog=_SEE_ALSO,
        formatter_class=raw,
    )
    sub.add_parser(
        "check",
        help="check settings, databases, privileges and Slack; non-zero exit on problems",
        description=_MODE_HELP["check"],
        formatter_class=raw,
    )
    drop = sub.add_parser(
        "drop-state",
        help="remove the bot's state (schema pgconn: requests, audit trail, alerts) from its database",
        description=_MODE_HELP["drop-state"],
        formatter_class=raw,
    )
    drop.add_argument("--yes", action="store_true", help="do not ask; remove it")
    setup = sub.add_parser("setup-sql", help="print the SQL for a least-privilege database role for the bot")
    setup.add_argument("--role", default="pgconn_bot", help="name of the login role (default pgconn_bot)")
    setup.add_argument("--state-database", default=None, help="database for the bot's state, if separate")
    setup.add_argument(
        "--targets", type=int, default=None, help="targets on the server (default: as configured now, else 1)"
    )
    setup.add_argument("--replicas", type=int, default=1, help="replicas of the bot that will run (default 1)")
    add_drain_argument(setup)
    console = sub.add_parser(
        "console",
        help="the same commands in a terminal, no Slack needed",
        description=_MODE_HELP["console"],
        epilog=_SEE_ALSO,
        formatter_class=raw,
    )
    console.add_argument("--as", dest="identity", metavar="SLACK_USER_ID", help="identity used for role checks")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``pgconn-bot``: serve | socket | console | check | setup-sql | drop-state. Exit 0, 1 (cannot start or
    check failed), 2 (bad configuration), with one line on stderr."""
    args = _parser().parse_args(argv)
    if args.mode is None:
        _parser().print_help()
        return 2
    if args.mode == "setup-sql":
        from bot.setup_sql import main as setup_sql_main

        return setup_sql_main(args)
    try:
        settings = load_settings()
        require(settings, args.mode)
    except ConfigError as exc:
        print(f"pgconn-bot: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    configure_logging(settings, console=args.mode in ("console", "drop-state"))

    if args.mode == "console":
        from bot.console import console_main
        from bot.runtime import Runtime

        with contextlib.suppress(KeyboardInterrupt):
            return console_main(Runtime.build(settings), args.identity)
        return 130
    if args.mode == "check":
        from bot.doctor import run_check

        return asyncio.run(run_check(settings, sys.stdout))
    if args.mode == "drop-state":
        from bot.drop_state import drop_state

        return asyncio.run(drop_state(settings, yes=args.yes, stdin=sys.stdin, out=sys.stdout))
    return asyncio.run(serve(settings, socket_mode=args.mode == "socket"))


async def serve(settings: Settings, *, socket_mode: bool = False) -> int:
    """Run ``serve``/``socket`` until SIGTERM/SIGINT (0), or until the bot must not go on (1)."""
    from bot.server import BotServer

    server = BotServer(settings, socket_mode=socket_mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before start: it may wait for the state database
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(server.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await server.stop()
        return 0
    try:
        starting.result()
    except Exception as exc:
        print(f"pgconn-bot: cannot start: {redact(first_line(exc))}", file=sys.stderr)
        await server.stop()
        return 1
    log.info(
        "pgconn-bot %s %s, health and metrics on port %s, targets: %s",
        __version__,
        "connected over Socket Mode" if socket_mode else "serving Slack on /slack/events",
        server.port,
        ", ".join(server.runtime.targets.names),
    )
    failing = asyncio.create_task(server.runtime.fatal.wait())
    await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
    if failing.done():
        print(f"pgconn-bot: cannot go on: {redact(server.runtime.fatal_reason or 'fatal error')}", file=sys.stderr)
        stopping.cancel()
        await server.stop()
        return 1
    failing.cancel()
    log.info("shutting down")
    await server.stop()
    return 0
