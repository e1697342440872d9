"""Every Slack Web API call the bot makes goes through here (to SLACK_API_URL)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.errors import first_line
from bot.model.alerts import Alert
from bot.model.audit import AuditEntry
from bot.model.digest import Digest
from bot.model.drains import Undrained
from bot.model.errors import AnnounceError
from bot.model.ownership import LinkCode, LinkConfirmed
from bot.model.requests import SignalRequest
from bot.render.blocks import (
    SlackMessage,
    alert_message,
    audit_message,
    digest_message,
    render_blocks,
    request_message,
    resolved_reply,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


# Whatever Slack (or something posing as it) says in Retry-After: an interactive call waits at
# most this long before retrying (else it fails and the caller decides), and nothing waits more
# than MAX_RETRY_AFTER_SECONDS before trying again.
INTERACTIVE_RETRY_AFTER_SECONDS = 3.0
MAX_RETRY_AFTER_SECONDS = 300.0
# Calls made while someone waits for an answer, or a request waits to be posted.
GROUP_LOOKUP_SECONDS = 5.0
POST_REQUEST_SECONDS = 30.0
TELL_REQUESTER_SECONDS = 20.0


class _CountedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Retries a 429 only when Slack asks for a short wait; a long one fails the call at once."""

    async def _can_retry_async(self, **kwargs: Any) -> bool:
        if not await super()._can_retry_async(**kwargs):
            return False
        wait = _retry_after(kwargs.get("response"))
        return wait is not None and wait <= INTERACTIVE_RETRY_AFTER_SECONDS

    async def prepare_for_next_attempt_async(self, **kwargs: Any) -> None:
        metrics.SLACK_RETRIES.labels(reason="rate_limited").inc()
        await super().prepare_for_next_attempt_async(**kwargs)


class _CountedConnectionRetry(AsyncConnectionErrorRetryHandler):
    async def prepare_for_next_attempt_async(self, **kwargs: Any) -> None:
        metrics.SLACK_RETRIES.labels(reason="connection").inc()
        await super().prepare_for_next_attempt_async(**kwargs)


def build_web_client(token: str | None, api_url: str, *, wait_on_rate_limit: bool = True) -> AsyncWebClient:
    """A client that retries dropped connections and (unless told not to) honours 429 Retry-After."""
    handlers: list[Any] = [_CountedConnectionRetry(max_retry_count=1)]
    if wait_on_rate_limit:
        handlers.insert(0, _CountedRateLimitRetry(max_retry_count=2))
    return AsyncWebClient(token=token, base_url=api_url, timeout=10, retry_handlers=handlers)


class SlackGroupDirectory:
    """Resolves user-group members with ``usergroups.users.list`` (scope ``usergroups:read``)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def members(self, group_id: str) -> frozenset[str]:
        async with asyncio.timeout(GROUP_LOOKUP_SECONDS):
            response = await self._client.usergroups_users_list(usergroup=group_id)
        return frozenset(response.get("users") or [])


_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
# Slack's errors that no retry can fix: the message's content, or the channel itself.
_REJECTED_CONTENT = {
    "invalid_blocks",
    "msg_too_long",
    "invalid_blocks_format",
    "no_text",
    "too_many_attachments",
    "invalid_attachments",
    "invalid_metadata_format",
    "unrenderable",  # the bot could not build the message at all
}
_REJECTED_CHANNEL = {
    "channel_not_found",
    "is_archived",
    "channel_is_archived",
    "not_in_channel",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
    "ekm_access_denied",
    "team_access_not_granted",
}
# Errors that pass (Slack busy or down, the network) or that only a fix of the bot's own
# configuration cures (its token): retried for ever, never held against one entry.
_PASSING = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "timeout",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
    "no_permission",
    "not_allowed_token_type",
}
SHORT_TEXT = 1500


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value if not isinstance(value, list) else value[0])
            except (TypeError, ValueError):
                return None
            return max(1.0, min(MAX_RETRY_AFTER_SECONDS, seconds)) if seconds == seconds else None  # NaN
    return None


def _failure(exc: Exception) -> AnnounceError:
    if isinstance(exc, SlackApiError):
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        status = exc.response.status_code
        reason = str(data.get("error") or f"HTTP {status}")
        metrics.SLACK_ERRORS.labels(error=reason if reason.isidentifier() else "other").inc()
        retry_after = _retry_after(exc.response) if status == 429 else None
        if reason in _REJECTED_CONTENT:
            return AnnounceError(reason, retry_after, "message")
        if reason in _REJECTED_CHANNEL:
            return AnnounceError(reason, retry_after, "channel")
        return AnnounceError(reason, retry_after, known=status >= 500 or status == 429 or reason in _PASSING)
    metrics.SLACK_ERRORS.labels(error=type(exc).__name__).inc()
    return AnnounceError(first_line(exc) or type(exc).__name__)


def _built(build: Callable[[T], SlackMessage], item: T) -> SlackMessage:
    """A message from a result; one that cannot be built is a permanent failure, like Slack's refusal."""
    try:
        return build(item)
    except Exception as exc:
        log.exception("could not build a Slack message for %s", type(item).__name__)
        raise AnnounceError("unrenderable", permanent="message") from exc


async def _checked(call: Awaitable[Any]) -> Any:
    """A Web API call whose failure becomes an AnnounceError (with Retry-After on a 429)."""
    try:
        return await call
    except Exception as exc:
        raise _failure(exc) from exc


class SlackAnnouncer:
    """Approval messages, their updates, requester notices and audit entries, via the Web API.

    Audit entries go through a client without the built-in 429 sleep: the outbox does its own
    backoff, so a rate-limited channel never stalls the housekeeper.
    """

    can_post = True

    def __init__(self, client: AsyncWebClient, outbox_client: AsyncWebClient) -> None:
        self._client = client
        self._outbox_client = outbox_client

    async def post_request(self, request: SignalRequest, channel: str) -> str:
        message = _built(request_message, request)
        try:
            async with asyncio.timeout(POST_REQUEST_SECONDS):
                response = await _checked(
                    self._client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
                )
        except TimeoutError:
            raise AnnounceError("timeout") from None
        return str(response.get("ts") or "")

    async def update_request(self, request: SignalRequest) -> None:
        assert request.channel and request.message_ts
        message = _built(request_message, request)
        await _checked(
            self._client.chat_update(
                channel=request.channel, ts=request.message_ts, text=message.text, blocks=message.blocks
            )
        )

    async def tell_requester(self, request: SignalRequest) -> None:
        if not _SLACK_USER.match(request.requester):
            return  # a console identity: nobody to message in Slack
        message = _built(request_message, request)
        # A user ID as the channel posts into the bot's direct messages with that person.
        async with asyncio.timeout(TELL_REQUESTER_SECONDS):
            await self._client.chat_postMessage(
                channel=request.requester,
                text=f"Your request #{request.id} is {request.status}. {message.text}",
                blocks=message.blocks,
            )

    async def tell_linked(self, code: LinkCode) -> None:
        if not _SLACK_USER.match(code.user_id):
            return  # a console identity: nobody to message in Slack
        message = render_blocks(LinkConfirmed(code))
        async with asyncio.timeout(TELL_REQUESTER_SECONDS):
            await self._client.chat_postMessage(channel=code.user_id, text=message.text, blocks=message.blocks)

    async def post_digest(self, channel: str, digest: Digest) -> str:
        message = digest_message(digest)
        response = await _checked(
            self._client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
        )
        return str(response.get("ts") or "")

    async def post_notice(self, channel: str, result: Undrained) -> None:
        message = render_blocks(result)
        await _checked(self._client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks))

    async def post_audit(self, entry: AuditEntry, channel: str, request_message: str | None) -> str | None:
        try:
            message = _built(lambda e: audit_message(e, request_message), entry)
        except AnnounceError:  # never silent: a line that says so, the table has the rest
            text = f"Audit entry {entry.id} ({entry.event}, request #{entry.request_id}) could not be shown in full; "
            text += "see pgconn.audit."
            message = SlackMessage(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}])
        response = await self._post_unblockable(channel, message, f"audit entry {entry.id}")
        return str(response.get("ts") or "") or None

    # Alerts use the client without the 429 sleep: the monitor retries on its next cycle instead,
    # after the Retry-After it was given.

    async def post_alert(self, alert: Alert, channel: str) -> str:
        response = await self._post_unblockable(channel, _built(alert_message, alert), f"alert {alert.id}")
        ts = response.get("ts")
        if not ts:
            raise AnnounceError("Slack did not return the alert message's ts")
        return str(ts)

    async def _post_unblockable(self, channel: str, message: SlackMessage, what: str) -> Any:
        """Post; if Slack refuses the content itself, post a plain short version instead, so one
        entry Slack will never take cannot hold up a queue behind it."""
        try:
            return await self._outbox_client.chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks, unfurl_links=False, unfurl_media=False
            )
        except Exception as exc:
            failure = _failure(exc)
            if failure.permanent != "message":
                raise failure from exc
            log.error("%s refused by Slack (%s); posting it as short text", what, failure.reason)
        return await _checked(
            self._outbox_client.chat_postMessage(
                channel=channel, text=message.text[:SHORT_TEXT], unfurl_links=False, unfurl_media=False
            )
        )

    async def update_alert(self, alert: Alert) -> None:
        if not alert.channel or not alert.message_ts:
            return
        message = _built(alert_message, alert)
        await _checked(
            self._outbox_client.chat_update(
                channel=alert.channel, ts=alert.message_ts, text=message.text, blocks=message.blocks
            )
        )

    async def delete_message(self, channel: str, ts: str) -> None:
        try:
            await self._outbox_client.chat_delete(channel=channel, ts=ts)
        except Exception as exc:
            log.warning("could not delete duplicate message %s in %s: %s", ts, channel, first_line(exc))

    async def reply_resolved(self, alert: Alert) -> None:
        if not alert.channel or not alert.message_ts:
            return
        message = _built(resolved_reply, alert)
        await _checked(
            self._outbox_client.chat_postMessage(
                channel=alert.channel, thread_ts=alert.message_ts, text=message.text, blocks=message.blocks
            )
        )


async def post_ephemeral(
    client: AsyncWebClient, channel: str | None, user: str, text: str, blocks: list[dict[str, Any]]
) -> None:
    """A private note in a channel (for a click that came without a response_url)."""
    if channel:
        await client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)


async def publish_home(client: AsyncWebClient, user: str, view: dict[str, Any]) -> None:
    """The App Home tab of one person (no scope of its own: the bot token suffices)."""
    await client.views_publish(user_id=user, view=view)


# --- pgconn-bot check ----------------------------------------------------------------------


async def token_info(client: AsyncWebClient) -> tuple[dict[str, Any], set[str] | None]:
    """``auth.test``'s answer, and the scopes the token was granted (its x-oauth-scopes header)."""
    auth = await client.auth_test()
    return dict(auth.data) if isinstance(auth.data, dict) else {}, _granted_scopes(auth.headers)


# What apps.connections.open says when the app-level token itself is wrong: retrying cannot help.
APP_TOKEN_REFUSALS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "not_allowed_token_type"}
)


class AppTokenRefused(Exception):
    """Slack refuses the app-level token for Socket Mode (``error``: what it said)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def socket_mode_url(app_token: str, api_url: str) -> str | None:
    """A WebSocket URL from apps.connections.open, for the first connection. Raises
    AppTokenRefused when Slack refuses the token itself (Socket Mode's client would retry that for
    ever); None when Slack cannot be asked now (the client retries that, as it should)."""
    client = build_web_client(app_token, api_url)
    try:
        async with asyncio.timeout(10):
            response = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = str(data.get("error") or "")
        if error in APP_TOKEN_REFUSALS:
            raise AppTokenRefused(error) from None
        return None
    except Exception:
        return None
    url = response.get("url")
    return url if isinstance(url, str) else None


async def channel_info(client: AsyncWebClient, channel: str) -> dict[str, Any]:
    info = await client.conversations_info(channel=channel)
    return dict(info.get("channel") or {})


def _granted_scopes(headers: Any) -> set[str] | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == "x-oauth-scopes":
            text = value if isinstance(value, str) else ",".join(value)
            return {scope.strip() for scope in text.split(",") if scope.strip()}
    return None
