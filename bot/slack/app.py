"""Build the Bolt app and register every listener in one place."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from bot.core.service import CommandService
from bot.model.alerts import AlertAction
from bot.render.blocks import (
    ALERT_ACK_ACTION,
    ALERT_REQUEST_ACTION,
    ALERT_SNOOZE_ACTION,
    ALERT_UNSNOOZE_ACTION,
    APPROVE_ACTION,
    DENY_ACTION,
)
from bot.render.document import FREE_ACTION
from bot.slack.gateway import build_web_client
from bot.slack.inflight import InFlight, TrackedLazyListenerRunner
from bot.slack.installation import Installation
from bot.slack.listeners import actions, commands, home

log = logging.getLogger(__name__)


class _NoTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns that the client
    given wins; the client carries that same token (see ``authorize``), so the warning misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_NoTokenWarning())

SLASH_COMMAND = "/pgconn"


def build_app(
    *,
    service: CommandService,
    bot_token: str,
    signing_secret: str,
    api_url: str,
    verify_requests: bool = True,
    inflight: InFlight | None = None,
    installation: Installation | None = None,
) -> AsyncApp:
    """``verify_requests=False`` only for Socket Mode, where Slack's requests arrive over the
    authenticated WebSocket instead of signed HTTP."""

    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        # Single workspace: the configured token is the answer. Bolt's default would call
        # auth.test before the first command can be answered.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=bot_token)

    app = AsyncApp(
        client=build_web_client(None, api_url),
        signing_secret=signing_secret,
        authorize=authorize,
        process_before_response=True,
        request_verification_enabled=verify_requests,
        raise_error_for_unhandled_request=False,
    )
    if inflight is not None:
        # Bolt has no public way to supply the lazy listener runner; its listener runner keeps it here.
        runner = app._async_listener_runner
        runner.lazy_listener_runner = TrackedLazyListenerRunner(runner.logger, inflight)
    if installation is not None:
        app.use(installation.middleware())
    app.command(SLASH_COMMAND)(ack=commands.acknowledge, lazy=[commands.make_answer(service)])
    app.action(APPROVE_ACTION)(ack=actions.acknowledge, lazy=[actions.make_click_handler(service, approve=True)])
    app.action(DENY_ACTION)(ack=actions.acknowledge, lazy=[actions.make_click_handler(service, approve=False)])
    app.action(ALERT_REQUEST_ACTION)(ack=actions.acknowledge, lazy=[actions.make_alert_request_handler(service)])
    for action_id, action in (
        (ALERT_ACK_ACTION, AlertAction.ACKNOWLEDGE),
        (ALERT_SNOOZE_ACTION, AlertAction.SNOOZE),
        (ALERT_UNSNOOZE_ACTION, AlertAction.UNSNOOZE),
    ):
        app.action(action_id)(ack=actions.acknowledge, lazy=[actions.make_alert_desk_handler(service, action)])
    app.action(FREE_ACTION)(ack=actions.acknowledge, lazy=[actions.make_free_handler(service)])
    app.event("app_home_opened")(ack=home.acknowledge, lazy=[home.make_home_handler(service)])
    return app
