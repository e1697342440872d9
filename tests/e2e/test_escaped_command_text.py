"""Slack escapes the /pgconn text (manifest: should_escape: true); the bot reads what was typed."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import PgWorld
from tests.e2e.conftest import BotUnderTest, message_text, open_request


async def test_entities_are_decoded_once(bot: BotUnderTest, world: PgWorld) -> None:
    ghost = f"pgct_{world.tag}_ghost"

    angled = message_text(await bot.ask(f"list &lt;{ghost}&gt;"))
    twice = message_text(await bot.ask(f"list &amp;lt;{ghost}&amp;gt;"))
    mention = message_text(await bot.ask("list <@U0123ABC|alice>"))

    # message_text reads the answer as Slack shows it (the answer escapes < as &lt;).
    assert f"no role named '<{ghost}>'" in angled, angled
    assert f"no role named '&lt;{ghost}&gt;'" in twice, twice  # the user typed &lt;…&gt;
    assert "no role named '<@U0123ABC>'" in mention, mention


async def test_reason_and_command_text_are_stored_as_typed(
    start_approval_bot: Any, world: PgWorld, fresh_state_dsn: str
) -> None:
    bot = await start_approval_bot()
    role = world.role("ta_escaped", limit=2)
    world.connect(role, "stray-notebook")
    sent = (
        f'kill user {role} --reason "a &lt;b&gt; &amp; c, ask <@U0OTHER|sam> in <#C0DBA|dba>, '
        'see <https://wiki.example/x?a=1&amp;b=2|wiki>"'
    )
    typed = f'kill user {role} --reason "a <b> & c, ask <@U0OTHER> in #dba, see https://wiki.example/x?a=1&b=2"'

    request_id, message = await open_request(bot, sent)

    with psycopg.connect(fresh_state_dsn) as conn:
        row = conn.execute("SELECT reason, command_text FROM pgconn.request WHERE id = %s", (request_id,)).fetchone()
    assert row == ("a <b> & c, ask <@U0OTHER> in #dba, see https://wiki.example/x?a=1&b=2", typed)
    assert "a <b> & c" in message_text(message.payload)
