"""``pgconn-bot`` / ``python -m bot``: serve, console (socket, check, setup-sql are reserved)."""

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

log = logging.getLogger("bot")

RESERVED = {
    "socket": "Socket Mode",
    "check": "the configuration doctor",
    "setup-sql": "the least-privilege SQL generator",
}
STATE_STARTUP_SECONDS = 15.0


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    console = sub.add_parser("console", help="the same commands in a terminal, no Slack needed")
    console.add_argument("--as", dest="identity", metavar="SLACK_USER_ID", help="identity used for role checks")
    for name, what in RESERVED.items():
        sub.add_parser(name, help=f"{what} (coming in a later version)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode is None:
        _parser().print_help()
        return 2
    if args.mode in RESERVED:
        print(f"pgconn-bot {args.mode}: {RESERVED[args.mode]} is not available in this version yet.", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        if args.mode == "serve":
            require(settings, "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
    except ConfigError as exc:
        print(f"pgconn-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)

    if args.mode == "console":
        from bot.console import console_main
        from bot.runtime import Runtime

        with contextlib.suppress(KeyboardInterrupt):
            return console_main(Runtime.build(settings), args.identity)
        return 130
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    from aiohttp import web

    from bot.core.policy import CachedGroups
    from bot.runtime import Runtime
    from bot.slack.app import build_app
    from bot.slack.gateway import SlackGroupDirectory, build_web_client
    from bot.slack.web import build_web_app

    token = settings.bot_token() or ""
    web_client = build_web_client(token, settings.slack_api_url)
    runtime = Runtime.build(settings, groups=CachedGroups(SlackGroupDirectory(web_client)))
    try:
        await _start_with_retry(runtime)
    except Exception as exc:
        print(f"pgconn-bot: cannot prepare the state database: {exc}", file=sys.stderr)
        await runtime.stop()
        return 1

    assert settings.slack_signing_secret is not None
    app = build_app(
        service=runtime.service,
        bot_token=token,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        api_url=settings.slack_api_url,
    )
    runner = web.AppRunner(build_web_app(app, runtime.state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=settings.port)
    await site.start()
    log.info("pgconn-bot %s serving on port %d, targets: %s", __version__, settings.port, ", ".join(runtime.targets.names))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    await runtime.stop()
    return 0


async def _start_with_retry(runtime: Any) -> None:
    """The state database may come up a little after the bot (compose, k8s): wait a while for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STATE_STARTUP_SECONDS
    delay = 0.5
    while True:
        try:
            await runtime.start(require_state=True)
            return
        except Exception as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("state database not ready (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4)
