"""manifest.yml matches what the code registers and calls."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.slack.app import SLASH_COMMAND

ROOT = Path(__file__).resolve().parents[2]
# Web API methods the code calls → the bot scope each needs.
SCOPE_FOR_METHOD = {
    "usergroups_users_list": "usergroups:read",
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "conversations_info": "channels:read",
    "chat_delete": "chat:write",
}
# Scopes no single method needs, each with its reason.
EXTRA_SCOPES = {
    "chat:write.public": "post approval requests in public channels without an /invite",
    # conversations.info needs channels:read for public channels and groups:read for private ones.
    "groups:read": "pgconn-bot check: private channels exist and the bot is in them",
}


def manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_has_the_fields_manifest_v1_requires() -> None:
    m = manifest()
    assert m["_metadata"]["major_version"] == 1
    assert m["display_information"]["name"]
    assert len(m["display_information"]["description"]) <= 140
    assert m["features"]["bot_user"]["display_name"]
    assert m["settings"]["interactivity"]["is_enabled"] is True


def test_command_and_urls() -> None:
    m = manifest()
    (command,) = m["features"]["slash_commands"]
    assert command["command"] == SLASH_COMMAND
    assert command["description"] and command["usage_hint"]
    # The listener decodes Slack's escaped text and markup (bot/slack/escaping.py): it must be on.
    assert command["should_escape"] is True
    for url in (command["url"], m["settings"]["interactivity"]["request_url"]):
        assert url.endswith("/slack/events") and "BOT_PUBLIC_URL" in url


def test_scopes_are_exactly_what_the_code_uses() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    used = {"commands", *EXTRA_SCOPES} | {
        scope for method, scope in SCOPE_FOR_METHOD.items() if re.search(rf"\.{method}\(", source)
    }
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == used


def test_events_and_app_home() -> None:
    m = manifest()
    assert m["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert m["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert m["features"]["app_home"]["home_tab_enabled"] is True
    source = (ROOT / "bot" / "slack" / "app.py").read_text()
    assert set(re.findall(r'app\.event\("([a-z_]+)"\)', source)) == {"app_home_opened"}
