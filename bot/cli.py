"""``pgconn-bot`` / ``python -m bot``: serve, socket, console, check, setup-sql."""

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
from bot.budget import Budget
from bot.config import ConfigError, Settings, load_settings, require
from bot.errors import first_line
from bot.logs import LOG_FIELDS
from bot.redact import RedactingFilter, redact

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


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # psycopg_pool logs every failed reconnect attempt; the bot reports unreachable targets itself.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgconn-bot", description="PostgreSQL connection management from Slack and a terminal."
    )
    parser.add_argument("--version", action="version", version=f"pgconn-bot {__version__}")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    sub.add_parser("serve", help="HTTP mode: Slack's Events API on $PORT, path /slack/events")
    sub.add_parser("socket", help="Socket Mode (SLACK_APP_TOKEN): no public URL needed")
    sub.add_parser("check", help="check settings, databases, privileges and Slack; non-zero exit on problems")
    setup = sub.add_parser("setup-sql", help="print the SQL for a least-privilege database role for the bot")
    setup.add_argument("--role", default="pgconn_bot", help="name of the login role (default pgconn_bot)")
    setup.add_argument("--state-database", default=None, help="database for the bot's state, if separate")
    setup.add_argument(
        "--targets", type=int, default=None, help="targets on the server (default: as configured now, else 1)"
    )
    setup.add_argument("--replicas", type=int, default=1, help="replicas of the bot that will run (default 1)")
    console = sub.add_parser("console", help="the same commands in a terminal, no Slack needed")
    console.add_argument("--as", dest="identity", metavar="SLACK_USER_ID", help="identity used for role checks")
    return parser


def _budget(args: argparse.Namespace) -> Budget:
    """What the bot will open, from the options and (when it reads) the configuration."""
    try:
        settings: Settings | None = load_settings()
    except ConfigError:
        settings = None
    targets = args.targets if args.targets is not None else len(settings.target_dsns()) if settings else 1
    if targets < 1 or args.replicas < 1:
        raise ValueError("--targets and --replicas must be 1 or more")
    return Budget(
        targets=targets,
        pool=settings.pool_max_size if settings else 4,
        state_pool=settings.state_pool_max_size if settings else 4,
        replicas=args.replicas,
    )


def main(argv: list[str] | None = None) -> int:
    """``pgconn-bot``: serve | socket | console | check | setup-sql. Exit 0, 1 (cannot start or
    check failed), 2 (bad configuration), with one line on stderr."""
    args = _parser().parse_args(argv)
    if args.mode is None:
        _parser().print_help()
        return 2
    if args.mode == "setup-sql":
        from bot.setup_sql import setup_sql

        try:
            print(setup_sql(args.role, args.state_database, _budget(args)))
        except ValueError as exc:
            print(f"pgconn-bot setup-sql: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        settings = load_settings()
        if args.mode == "serve":
            require(settings, "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
        elif args.mode == "socket":
            require(settings, "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")
    except ConfigError as exc:
        print(f"pgconn-bot: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    configure_logging(settings)

    if args.mode == "console":
        from bot.console import console_main
        from bot.runtime import Runtime

        with contextlib.suppress(KeyboardInterrupt):
            return console_main(Runtime.build(settings), args.identity)
        return 130
    if args.mode == "check":
        from bot.doctor import run_check

        return asyncio.run(run_check(settings, sys.stdout))
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
        what = "start" if socket_mode else "prepare the state database"
        print(f"pgconn-bot: cannot {what}: {redact(first_line(exc))}", file=sys.stderr)
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
