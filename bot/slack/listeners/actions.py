"""Buttons: Approve / Deny on requests, and on alerts the request button, Acknowledge, the Snooze
menu and Un-snooze.

Each is acknowledged at once and decided through the core. Everything executed comes from the
stored request or alert; a button's value is only an id. Who clicked is taken from the signed
payload, never from anything the message carries.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.core.service import CommandService, Outcome
from bot.logs import fields
from bot.model.access import Identity
from bot.model.alerts import AlertAction
from bot.model.problems import ForeignButton, InternalError
from bot.model.results import Decided, Result
from bot.render.blocks import render_blocks
from bot.render.text import render_text
from bot.slack.gateway import post_ephemeral
from bot.slack.listeners import home
from bot.slack.listeners.commands import deliver

log = logging.getLogger(__name__)


async def acknowledge(ack: AsyncAck) -> None:
    await ack()


def _clicked_id(body: dict[str, Any]) -> int | None:
    actions = body.get("actions") or [{}]
    value = str(actions[0].get("value") or "")
    return int(value) if value.isdigit() and 0 < int(value) < 2**63 else None


def _message_of(body: dict[str, Any]) -> tuple[str, str] | None:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
    if container.get("is_ephemeral") or not channel or not ts:
        return None
    return str(channel), str(ts)


def _identity(body: dict[str, Any]) -> Identity:
    user = body.get("user") or {}
    return Identity(
        user_id=str(user.get("id") or ""),
        team_id=(body.get("team") or {}).get("id"),
        display=user.get("username") or user.get("name"),
    )


async def _answer_privately(
    body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient, user: str, result: Result
) -> None:
    message = render_blocks(result)
    try:
        if body.get("response_url"):
            await deliver(respond, text=message.text, blocks=message.blocks)
        else:
            where = _message_of(body)
            await post_ephemeral(client, where[0] if where else None, user, message.text, message.blocks)
    except Exception as exc:
        log.error("could not answer %s's click: %s", user, exc)


async def _guarded(kind: str, doing: str, clicked: object, identity: Identity, work: Any) -> tuple[Result, str]:
    """Run a click's work; a click on something that is not the bot's, or a failure, is answered too."""
    if clicked is None:
        return ForeignButton(kind), "invalid"
    try:
        outcome: Outcome = await work(clicked)
        return outcome.result, outcome.status
    except Exception:
        reference = uuid.uuid4().hex[:8]
        log.exception("unhandled error on a click on %s %s by %s (ref %s)", kind, clicked, identity.user_id, reference)
        return InternalError(reference, doing), "error"


def make_click_handler(service: CommandService, *, approve: bool) -> Any:
    """The Approve (or Deny) button's listener: acknowledged at once by Bolt, decided through
    ``CommandService.decide``, the clicker answered privately (the message itself is updated by
    the core)."""
    decision = "approve" if approve else "deny"

    async def handle_click(body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        started = time.perf_counter()
        identity = _identity(body)
        request_id = _clicked_id(body)

        async def decide(request_id: int) -> Outcome:
            return await service.decide(request_id, approve, identity, clicked_on=_message_of(body))

        result, status = await _guarded("request", decision, request_id, identity, decide)
        if (body.get("container") or {}).get("type") == "view":
            # Clicked on the App Home tab: show the outcome there, with the list brought up to date.
            await home.refresh(service, client, identity, note=" — ".join(render_text(result).splitlines()[:2]))
        elif not (isinstance(result, Decided) and result.effect in ("executed", "denied")):
            # The message itself shows executions and denials; the clicker hears only about the rest.
            await _answer_privately(body, respond, client, identity.user_id, result)
        metrics.CLICKS.labels(decision=decision, outcome=status).inc()
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "click %s on request #%s by %s: %s in %.0f ms",
            decision,
            request_id,
            identity.user_id,
            status,
            elapsed_ms,
            extra=fields(
                event="click",
                user=identity.user_id,
                decision=decision,
                request_id=request_id,
                outcome=status,
                duration_ms=round(elapsed_ms),
            ),
        )

    return handle_click


def make_alert_request_handler(service: CommandService) -> Any:
    async def handle_alert_click(body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        identity = _identity(body)
        alert_id = _clicked_id(body)
        where = _message_of(body)

        async def request(alert_id: int) -> Outcome:
            return await service.request_from_alert(alert_id, identity, channel=where[0] if where else None)

        result, status = await _guarded("alert", "the cleanup request", alert_id, identity, request)
        await _answer_privately(body, respond, client, identity.user_id, result)
        metrics.CLICKS.labels(decision="alert_request", outcome=status).inc()
        log.info(
            "click on alert #%s by %s: %s",
            alert_id,
            identity.user_id,
            status,
            extra=fields(
                event="click", user=identity.user_id, decision="alert_request", alert_id=alert_id, outcome=status
            ),
        )

    return handle_alert_click


def _clicked_snooze(body: dict[str, Any]) -> tuple[int, str | None] | None:
    """The Snooze menu's choice: its value is "<alert id>:<1h|4h|1d>" (the core checks the choice)."""
    actions = body.get("actions") or [{}]
    selected = actions[0].get("selected_option") or {}
    alert, _, choice = str(selected.get("value") or "").partition(":")
    if alert.isdigit() and 0 < int(alert) < 2**63 and 0 < len(choice) <= 8:
        return int(alert), choice
    return None


def make_alert_desk_handler(service: CommandService, action: AlertAction) -> Any:
    """Acknowledge, Snooze or Un-snooze on an alert: acknowledged at once by Bolt, done through
    ``CommandService.alert_button`` (the core checks the clicker's role and edits the alert's
    message), the clicker answered privately (a refusal, or what it did)."""

    async def handle_alert_desk_click(body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        identity = _identity(body)
        if action is AlertAction.SNOOZE:
            clicked = _clicked_snooze(body)
        else:
            alert_id = _clicked_id(body)
            clicked = (alert_id, None) if alert_id is not None else None

        async def act(clicked: tuple[int, str | None]) -> Outcome:
            alert_id, choice = clicked
            return await service.alert_button(action, alert_id, identity, choice=choice)

        result, status = await _guarded("alert", str(action), clicked, identity, act)
        await _answer_privately(body, respond, client, identity.user_id, result)
        metrics.CLICKS.labels(decision=f"alert_{action}", outcome=status).inc()
        log.info(
            "click %s on alert #%s by %s: %s",
            action,
            clicked[0] if clicked else None,
            identity.user_id,
            status,
            extra=fields(
                event="click",
                user=identity.user_id,
                decision=f"alert_{action}",
                alert_id=clicked[0] if clicked else None,
                outcome=status,
            ),
        )

    return handle_alert_desk_click


def _clicked_target(body: dict[str, Any]) -> str | None:
    actions = body.get("actions") or [{}]
    value = str(actions[0].get("value") or "")
    return value if 0 < len(value) <= 64 and value.isprintable() else None


def make_free_handler(service: CommandService) -> Any:
    """The Free my idle connections button (``mine``, App Home): ``free`` on the target it names,
    for whoever clicked (ownership is checked in the core, from the signed payload's user)."""

    async def handle_free_click(body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        identity = _identity(body)
        target = _clicked_target(body)
        where = _message_of(body)

        async def free(target: str) -> Outcome:
            return await service.free_from_button(target, identity, channel=where[0] if where else None)

        result, status = await _guarded("free", "freeing your idle sessions", target, identity, free)
        if (body.get("container") or {}).get("type") == "view":
            await home.refresh(service, client, identity, note=" — ".join(render_text(result).splitlines()[:2]))
        else:
            await _answer_privately(body, respond, client, identity.user_id, result)
        metrics.CLICKS.labels(decision="free", outcome=status).inc()
        log.info(
            "click on free (%s) by %s: %s",
            target,
            identity.user_id,
            status,
            extra=fields(event="click", user=identity.user_id, decision="free", outcome=status),
        )

    return handle_free_click
