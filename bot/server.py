"""The bot as a long-running process: ``serve`` (HTTP) and ``socket`` (Socket Mode).

Both run the same Bolt app, the same background work (housekeeping, monitor) and the same
``/healthz`` and ``/metrics`` endpoints; they differ only in how Slack's requests arrive. The CLI
and the end-to-end tests start exactly this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.config import Settings
from bot.core.housekeeping import HOUSEKEEPING_SECONDS
from bot.core.policy import CachedGroups
from bot.errors import first_line
from bot.model.errors import StateSchemaError
from bot.redact import redact
from bot.runtime import Runtime
from bot.slack.app import build_app
from bot.slack.gateway import (
    AppTokenRefused,
    SlackAnnouncer,
    SlackGroupDirectory,
    build_web_client,
    socket_mode_url,
)
from bot.slack.guard import PayloadGuard
from bot.slack.inflight import InFlight
from bot.slack.installation import Installation
from bot.slack.web import build_web_app

log = logging.getLogger(__name__)

STATE_STARTUP_SECONDS = 5.0
# Shutdown budget (about 10 s in all): stop listening 1 s, running work 5 s, background tasks and
# a last audit flush 2–3 s, pools 1 s.
DRAIN_SECONDS = 5.0


class SlackTokenError(Exception):
    """Slack refuses a configured token: starting (or retrying) cannot help."""


class BotServer:
    """``serve`` (HTTP) and ``socket`` (Socket Mode): the runtime, the Bolt app, ``/healthz`` and
    ``/metrics``. ``start`` waits a few seconds for the state database, then starts without it."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "0.0.0.0",
        port: int | None = None,
        housekeeping_seconds: float = HOUSEKEEPING_SECONDS,
        socket_mode: bool = False,
    ) -> None:
        self.settings = settings
        self.socket_mode = socket_mode
        self._host = host
        self._port = settings.port if port is None else port
        token = settings.bot_token() or ""
        self.web_client = build_web_client(token, settings.slack_api_url)
        announcer = SlackAnnouncer(
            self.web_client, build_web_client(token, settings.slack_api_url, wait_on_rate_limit=False)
        )
        self.runtime = Runtime.build(
            settings,
            groups=CachedGroups(SlackGroupDirectory(self.web_client)),
            announcer=announcer,
            alert_announcer=announcer,
            housekeeping_seconds=housekeeping_seconds,
        )
        self.inflight = InFlight()
        self.installation = Installation(self.web_client)
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        self._signing_secret = secret
        self.app = build_app(
            service=self.runtime.service,
            bot_token=token,
            signing_secret=secret,
            api_url=settings.slack_api_url,
            verify_requests=not socket_mode,
            inflight=self.inflight,
            installation=self.installation,
        )
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.port: int | None = None

    async def start(self, state_wait: float = STATE_STARTUP_SECONDS) -> None:
        """Start the runtime (waiting at most ``state_wait`` for the state database), learn the
        workspace, then listen. Raises StateSchemaError for a schema someone else owns, and
        SlackTokenError for an app-level token Slack refuses."""
        await _start_with_retry(self.runtime, state_wait)
        await self.installation.learn()  # which workspace this is (auth.test); retried on demand
        self._runner = web.AppRunner(
            build_web_app(
                self.app,
                self.runtime.state.healthy,
                self.runtime.housekeeper,
                slack_events=not self.socket_mode,
                guard=None if self.socket_mode else PayloadGuard(self._signing_secret),
            ),
            access_log=None,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host=self._host, port=self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        if self.socket_mode:
            await self._connect_socket()

    async def _connect_socket(self) -> None:
        """Bolt's handler opens the WebSocket via apps.connections.open on SLACK_API_URL. It is
        asked here first: Bolt would retry a token Slack refuses for ever; the URL it gives is
        the handler's first (exactly what the handler would have done itself)."""
        app_token = self.settings.slack_app_token.get_secret_value() if self.settings.slack_app_token else ""
        try:
            url = await socket_mode_url(app_token, self.settings.slack_api_url)
        except AppTokenRefused as exc:
            raise SlackTokenError(
                f"Slack refuses SLACK_APP_TOKEN ({exc.error}): make an app-level token with the "
                "connections:write scope (Basic Information → App-Level Tokens) and enable Socket Mode"
            ) from None
        self._socket = AsyncSocketModeHandler(self.app, app_token)
        self._socket.client.wss_uri = url
        await self._socket.connect_async()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        """Graceful, within about 10 s: take no new work, let running work finish (an approval
        halfway through its targets), flush the audit outbox once, release the monitor's lock,
        close the pools."""
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening; waits up to shutdown_timeout for requests
            self._runner = None
        left = await self.inflight.drain(within_seconds=DRAIN_SECONDS)
        if left:
            log.warning("%d request(s) still running at shutdown; stopping anyway", left)
        await self.runtime.stop()


# The name the first version used (tests and embedders may still import it).
HttpServer = BotServer


async def _start_with_retry(runtime: Runtime, wait: float) -> None:
    """The state database may come up a little after the bot (compose, k8s): wait a while for it.
    If it still does not answer (a full server, say), start without it: what needs no state works
    at once, and it is retried in the background (a schema someone else owns stops the bot)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.25
    said = False
    if reason := await runtime.state.unreachable_reason():  # libpq's reason, at once, not after the wait
        log.warning(
            "state database (%s) not answering yet: %s; waiting up to %.0f s",
            runtime.settings.state_variable(),
            reason,
            wait,
        )
        said = True
    while True:
        try:
            # Each try waits only for what is left of ``wait``: a state database that is down (or a
            # full server) must not hold the start up for longer than promised.
            left = max(0.25, deadline - loop.time())
            await runtime.start(require_state=True, background=True, state_wait=left)
            return
        except StateSchemaError:
            raise  # not a database that is still starting: waiting would not change it
        except Exception as exc:
            if loop.time() + delay > deadline:
                # Runtime.start says why, naming the variable, and that it carries on without it.
                await runtime.start(require_state=False, background=True, state_wait=0.25)
                return
            if not said:
                reason = await runtime.state.unreachable_reason() or redact(first_line(exc))
                log.warning(
                    "state database (%s) not answering yet: %s; waiting up to %.0f s",
                    runtime.settings.state_variable(),
                    reason,
                    wait,
                )
                said = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4)
