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


def test_the_bots_own_connections_are_listed_marked_and_counted() -> None:
    from dataclasses import replace

    own = replace(conn(4700, app="pgconn-bot"), own=True)
    result = RoleConnections("default", BOB, [own, conn(4711)])
    for rendering in (render_text(result), all_text(render_blocks(result))):
        assert "bob: 2 connections" in rendering and "2/5 — 3 left" in rendering
        assert "4700 (this bot)" in rendering and "4711 (this bot)" not in rendering
        assert "1 connection marked (this bot): pgconn-bot's own" in rendering


def test_connection_limit_0_is_a_lockout_not_a_full_role() -> None:
    locked = RoleInfo("carol", 0, superuser=False, can_login=True)
    limit = render_text(RoleLimit("default", locked, 0))
    listed = render_text(RoleConnections("default", locked, []))
    leftover = render_text(RoleConnections("default", locked, [conn(4711)]))
    for text in (limit, listed, leftover):
        assert "logins disabled for this role" in text
        assert "at limit" not in text and "/pgconn stray" not in text
    assert "carol: 0/0 — logins disabled for this role (CONNECTION LIMIT 0)" in limit
    assert "1/0 — logins disabled" in leftover
    # a superuser's CONNECTION LIMIT 0 means nothing: superusers are never limited
    assert "no limit (superusers are never limited)" in render_text(
        RoleLimit("default", RoleInfo("su", 0, True, True), 1)
    )


def test_limit_says_when_a_database_takes_no_logins() -> None:
    from bot.model.activity import DatabaseLimit

    text = render_text(
        RoleLimit(
            "default",
            BOB,
            2,
            [
                DatabaseLimit("course", 3, 3),
                DatabaseLimit("frozen", 0, 0),
                DatabaseLimit("closed", 1, -1, allows_connections=False),
                DatabaseLimit("roomy", 1, 10),
            ],
        )
    )
    assert "database course has its own limit: 3/3 — at its limit" in text
    assert "database frozen: 0/0 — logins disabled for this database (CONNECTION LIMIT 0)" in text
    assert "database closed: logins disabled for this database (ALLOW_CONNECTIONS false); 1 session still in it" in text
    assert "database roomy has its own limit: 1/10 — 9 left" in text


def test_limits_lists_lockouts_and_full_databases() -> None:
    from bot.model.activity import DatabaseLimit

    roles = [RoleFill("carol", 0, 0), RoleFill("bob", 5, 5), RoleFill("ann", 4, 5)]
    text = render_text(LimitsOverview("default", roles, 0.8, [DatabaseLimit("course", 3, 3)]))
    assert text.startswith("! Roles at or above 80% of their connection limit: 3")
    assert "1 at or over the limit" in text and "1 with logins disabled (CONNECTION LIMIT 0)" in text
    assert "Databases at or above 80% of their own connection limit, or closed to logins: 1" in text
    assert "database course has its own limit: 3/3 — at its limit" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith(("carol", "bob", "ann"))}
    assert rows["carol"].split()[1:] == ["0/0", "logins", "disabled"]
    assert rows["bob"].split()[1:] == ["5/5", "100%"]

    only_databases = render_text(LimitsOverview("reporting", [], 0.8, [DatabaseLimit("course", 3, 3)]))
    assert "closed to logins on reporting: 1" in only_databases
    assert "No role is at or above 80% of its connection limit." in only_databases
    nothing = render_text(LimitsOverview("default", [], 0.8))
    assert nothing == "No role or database is at or above 80% of its connection limit."


def test_counts_are_pluralised() -> None:
    from bot.model.results import StrayConnections

    one = render_text(StrayConnections("default", BOB, None, [], 1))
    five = render_text(StrayConnections("default", BOB, None, [], 5))
    assert "1 connection in total." in one and "5 connections in total." in five
    assert "bob: 1 connection" in render_text(RoleConnections("default", BOB, [conn(1)]))
    unlimited = RoleInfo("app", -1, False, True)
    assert "app: 1 connection — no limit" in render_text(RoleLimit("default", unlimited, 1))


def test_help_for_an_unknown_subcommand_says_so() -> None:
    text = render_text(help_for(unknown="nosuch"))
    assert text.startswith("! No command named 'nosuch'.")
    assert "list, limit, limits, stray" in text and "/pgconn help <subcommand>" in text
    assert "pgconn-bot: PostgreSQL connections from Slack" not in text
    general = render_text(help_for())
    assert "Durations: 90s, 30m (or 30min), 2h, 1d, 1h30m." in general


def test_status_says_how_many_connections_are_the_bots_own() -> None:
    base = ServerStatus(
        target="default",
        server_version="16.4",
        max_connections=100,
        superuser_reserved=3,
        reserved=0,
        client_backends=10,
        by_state={"idle": 10},
        longest_active=None,
        longest_idle_in_transaction=None,
        top_roles=[("pgconn", 3), ("bob", 7)],
        top_clients=[],
        top_applications=[("pgconn-bot", 3)],
        warn_at=0.7,
        critical_at=0.9,
    )
    from dataclasses import replace

    assert "pgconn-bot's own" not in render_text(base)
    text = render_text(replace(base, own_connections=3))
    assert "3 connections of these are pgconn-bot's own: counted like any other, never signalled" in text
    assert "pgconn 3" in text and "pgconn-bot 3" in text
    assert "1 connection of these is pgconn-bot's own" in render_text(replace(base, own_connections=1))
