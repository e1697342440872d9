"""Both adapters: same content, Slack escaping, Block Kit limits for any size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core.commands import help_for
from bot.model.activity import Connection, RoleFill, RoleInfo
from bot.model.problems import BadInput
from bot.model.results import LimitsOverview, RoleConnections, RoleLimit, ServerStatus
from bot.model.text import clean, clean_name, is_clean
from bot.render.blocks import escape, render_blocks
from bot.render.document import fill_bar
from bot.render.text import render_text

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BOB = RoleInfo("bob", 5, superuser=False, can_login=True)


def conn(pid: int, app: str = "DBeaver", idle_minutes: int = 5, query: str = "select 1") -> Connection:
    return Connection(
        pid=pid,
        role="bob",
        database="classdb",
        application=app,
        client_addr="10.0.0.7",
        client_port=5000,
        state="idle",
        backend_start=NOW - timedelta(hours=3),
        xact_start=None,
        query_start=NOW - timedelta(minutes=idle_minutes),
        state_change=NOW - timedelta(minutes=idle_minutes),
        wait_event=None,
        query=query,
        observed_at=NOW,
    )


def all_text(message: object) -> str:
    blocks = message.blocks  # type: ignore[attr-defined]
    return "\n".join(
        [b["text"]["text"] for b in blocks if "text" in b] + [e["text"] for b in blocks for e in b.get("elements", [])]
    )


def test_list_in_both_adapters_carries_the_same_facts() -> None:
    result = RoleConnections("default", BOB, [conn(4711), conn(4712, "pgAdmin 4", 90)])
    text = render_text(result)
    slack = all_text(render_blocks(result))
    for rendering in (text, slack):
        assert "bob: 2 connections" in rendering and "2/5 — 3 left" in rendering
        assert rendering.index("4711") < rendering.index("4712")
        assert "pgAdmin 4" in rendering and "10.0.0.7" in rendering and "1h 30m" in rendering


def test_limit_wording() -> None:
    at = all_text(render_blocks(RoleLimit("default", BOB, 5)))
    over = render_text(RoleLimit("default", BOB, 6))
    unlimited = render_text(RoleLimit("default", RoleInfo("app", -1, False, True), 40))
    superuser = render_text(RoleLimit("default", RoleInfo("postgres", 5, True, True), 9))
    assert "5/5 — at limit — new connections are refused" in at and "/pgconn stray bob" in at
    assert "6/5 — over the limit" in over
    assert "no limit" in unlimited and "no limit (superusers are never limited)" in superuser


def test_suggested_commands_keep_the_target() -> None:
    text = render_text(RoleLimit("reporting", BOB, 5))
    assert "/pgconn stray bob --db reporting" in text and "on reporting" in text


def test_slack_text_is_escaped_everywhere() -> None:
    evil = conn(1, app="<!channel> <@U123|x> & `code`", query="select '<!here>'")
    message = render_blocks(RoleConnections("default", RoleInfo("<@U999>", 5, False, True), [evil]))
    raw = str(message.blocks) + message.text
    for injected in ("<!channel>", "<@U123", "<@U999>", "<!here>"):
        assert injected not in raw
    assert "&lt;!channel&gt;" in raw and "&amp;" in raw
    assert escape("a`b") == "aˋb"


def test_three_hundred_connections_fit_block_kit() -> None:
    rows = [conn(10_000 + i, app=f"app-{i % 4}-" + "x" * 40) for i in range(300)]
    message = render_blocks(RoleConnections("default", RoleInfo("crowd", -1, False, True), rows))
    assert len(message.blocks) <= 50
    for block in message.blocks:
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for element in block.get("elements", []):
            assert len(element["text"]) <= 3000
    text = all_text(message)
    assert "300 connections" in text and "and 260 more not shown" in text
    assert "10000" in text and "10299" not in text


def test_many_roles_near_limit_fit_block_kit() -> None:
    roles = [RoleFill(f"student{i:04d}", 5, 5) for i in range(2000)]
    message = render_blocks(LimitsOverview("default", roles, 0.8))
    assert len(message.blocks) <= 50 and "2000 at or over the limit" in all_text(message)


def test_status_bar_and_health() -> None:
    status = ServerStatus(
        target="default",
        server_version="16.4",
        max_connections=100,
        superuser_reserved=3,
        reserved=2,
        client_backends=68,
        by_state={"idle": 60, "active": 8},
        longest_active=None,
        longest_idle_in_transaction=None,
        top_roles=[("bob", 40)],
        top_clients=[("10.0.0.5", 30)],
        top_applications=[("DBeaver", 20)],
        warn_at=0.7,
        critical_at=0.9,
    )
    text = render_text(status)
    assert status.usable_slots == 95 and status.health == "WARNING"  # 72% ≥ 70%
    assert "68 of 95 usable" in text and "2 by reserved_connections" in text
    assert "███████░░░ 72%" in text and "bob 40" in text and "10.0.0.5 30" in text
    assert fill_bar(0.0) == "░░░░░░░░░░ 0%" and fill_bar(1.2).startswith("██████████")


def test_help_and_problems() -> None:
    assert "/pgconn list bob" in render_text(help_for())
    assert "Usage: /pgconn stray" in render_text(help_for("stray"))
    problem = render_blocks(BadInput("list needs a role name", "/pgconn list <role>"))
    assert problem.blocks[0]["text"]["text"].startswith(":x: *list needs a role name*")
    assert "/pgconn list &lt;role&gt;" in all_text(problem)


def test_console_output_cannot_drive_the_terminal() -> None:
    text = render_text(RoleConnections("default", BOB, [conn(1, app="\x1b[2Jgotcha")]))
    assert "\x1b" not in text


def test_suggested_commands_parse_back_for_awkward_role_names() -> None:
    from bot.core.commands import FindStray
    from bot.core.parser import parse_command

    awkward = RoleInfo("Mixed Case's", 5, False, True)
    text = render_text(RoleLimit("default", awkward, 5))
    suggested = next(line.strip() for line in text.splitlines() if line.strip().startswith("/pgconn stray"))
    assert parse_command(suggested) == FindStray(role="Mixed Case's")


def test_slack_entities_in_command_text_are_decoded_once() -> None:
    from bot.slack.listeners.commands import slack_text

    assert slack_text("list a&amp;b &lt;x&gt;") == "list a&b <x>"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        (
            "<@U123> <!channel> <https://evil.example|x>",
            "&lt;@U123&gt; &lt;!channel&gt; &lt;https://evil.example|x&gt;",
        ),
        ("@here and @Channel", "@\u2060here and @\u2060Channel"),
        ("bob :white_check_mark: done", "bob :\u2060white_check_mark: done"),  # emoji codes stay text
        ("x:tada:y :+1:", "x:\u2060tada:y :\u2060+1:"),
        ("10:41:03–10:41:58 UTC", "10:41:03–10:41:58 UTC"),  # times are not emoji codes
        ("SELECT a::text::int", "SELECT a::\u2060text::int"),  # a cast could hide one: defused too
        ("a:b:white_check_mark:", "a:\u2060b:\u2060white_check_mark:"),
        ("1:rotating_light: ::x::", "1:\u2060rotating_light: ::\u2060x::"),
        ("`code` breakout", "ˋcodeˋ breakout"),
        ("\x1d@U0ATTACK\x1d", "<@U0ATTACK>"),  # only the core writes markers: text is cleaned before
    ],
)
def test_escaping_for_slack(text: str, escaped: str) -> None:
    assert escape(text) == escaped


@pytest.mark.parametrize(
    ("raw", "name", "free"),
    [
        ("bob\n:x: fake line", "bob\ufffd:x: fake line", "bob :x: fake line"),
        ("a\x1d@U1\x1db", "a\ufffd@U1\ufffdb", "a @U1 b"),
        ("\u202eevil", "\ufffdevil", "evil"),
        ("tab\there", "tab\ufffdhere", "tab here"),
        ("  two  spaces ", "  two  spaces ", "two spaces"),
    ],
)
def test_text_from_outside_is_cleaned_once(raw: str, name: str, free: str) -> None:
    assert clean_name(raw) == name
    assert clean(raw) == free
    assert is_clean(clean(raw)) and is_clean(clean_name(raw))
