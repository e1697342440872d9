"""Self-service without a database: its grammar, its settings, and what its answers say."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import ConfigError, load_settings
from bot.core.commands import FreeMine, LinkRole, ParseError, ShowMine, ShowWhoAmI, UnlinkRole
from bot.core.ownership import new_code
from bot.core.parser import parse_command
from bot.model.access import AccessRole
from bot.model.activity import Connection, RoleInfo
from bot.model.ownership import (
    LINK_CODE_ALPHABET,
    ConnectHint,
    LinkCode,
    LinkCodeIssued,
    LinkIssue,
    LinkRefused,
    LinkSource,
    MyRoles,
    NotAnOwner,
    OwnedRole,
    OwnedRoleState,
    SelfService,
    WhoAmI,
)
from bot.render.blocks import render_blocks
from bot.render.document import FREE_ACTION
from bot.render.text import CONSOLE, render_text

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("whoami", ShowWhoAmI()),
        ("link bob", LinkRole(role="bob")),
        ("link bob --db reporting", LinkRole(role="bob", target="reporting")),
        ("link bob <@U0ALICE|alice>", LinkRole(role="bob", user="U0ALICE")),
        ("link bob <@U0ALICE>", LinkRole(role="bob", user="U0ALICE")),
        ("link bob U0ALICE", LinkRole(role="bob", user="U0ALICE")),
        ("link bob W0ALICE", LinkRole(role="bob", user="W0ALICE")),
        ("unlink bob", UnlinkRole(role="bob")),
        ("unlink bob <@U0ALICE|alice>", UnlinkRole(role="bob", user="U0ALICE")),
        ("mine", ShowMine()),
        ("mine --db reporting", ShowMine(target="reporting")),
        ("free", FreeMine()),
        ("free --older 10m", FreeMine(older_than=timedelta(minutes=10))),
        ("free --older 90min --db reporting", FreeMine(older_than=timedelta(minutes=90), target="reporting")),
    ],
)
def test_self_service_grammar(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("link", "link needs a role name"),
        ("link bob alice", "'alice' is not a Slack user"),
        ("link bob <#C0123|general>", "is not a Slack user"),
        ("link bob U0A U0B", "unexpected extra words"),
        ("free bob", "unexpected extra words"),
        ("free --older soon", "--older"),
        ("mine --idle 1h", "mine does not take --idle"),
    ],
)
def test_self_service_errors(text: str, message: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, ParseError) and message in parsed.message, parsed


def test_codes_are_unguessable_shaped_and_unambiguous() -> None:
    codes = {new_code() for _ in range(500)}
    assert len(codes) == 500
    for code in codes:
        head, tail = code.split("-")
        assert len(head) == len(tail) == 4 and set(head + tail) <= set(LINK_CODE_ALPHABET)
    assert not set("01OIL") & set(LINK_CODE_ALPHABET)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PGCONN_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))


def test_role_owners_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONN_ROLE_OWNERS", json.dumps({"U0A": ["bob"], "U0B": {"reporting": ["ro"], "*": ["x"]}}))
    monkeypatch.setenv("PGCONN_SELF_SERVICE", "AUTO")
    s = load_settings()
    assert s.role_owners == {"U0A": {"*": ("bob",)}, "U0B": {"reporting": ("ro",), "*": ("x",)}}
    assert s.self_service == "auto"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{not json", "PGCONN_ROLE_OWNERS: not valid JSON"),
        ('["bob"]', "PGCONN_ROLE_OWNERS: expected a JSON object"),
        ('{"alice": ["bob"]}', "'alice' is not a Slack user ID"),
        ('{"U0A": "bob"}', "expected a list of role names"),
        ('{"U0A": [""]}', "role names must be"),
        ('{"U0A": ["bo\\nb"]}', "role names must be"),
        ('{"U0A": {"a b": ["bob"]}}', "is not a target name"),
    ],
)
def test_bad_role_owners_fail_with_one_line(monkeypatch: pytest.MonkeyPatch, value: str, fragment: str) -> None:
    monkeypatch.setenv("PGCONN_ROLE_OWNERS", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_bad_self_service_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONN_SELF_SERVICE", "yes")
    with pytest.raises(ConfigError, match="PGCONN_SELF_SERVICE"):
        load_settings()


def _code(role: str = "bob") -> LinkCode:
    return LinkCode("7KQ2-M9XD", "U0STU", "default", role, NOW + timedelta(minutes=10))


def test_the_link_answer_says_exactly_what_to_type() -> None:
    issued = LinkCodeIssued(_code(), ConnectHint("db.example.edu", "5432", "course"), watching=True)
    text = render_text(issued)
    assert "psql 'host=db.example.edu port=5432 dbname=course user=bob application_name=pgconn-link-7KQ2-M9XD'" in text
    assert "direct message" in text and "Never use a code someone else gives you" in text
    odd = LinkCodeIssued(_code("it's me"), ConnectHint(None, None, None), watching=False)
    shown = render_text(odd, CONSOLE)
    assert "user='it\\'s me'" in shown.replace("'\"'\"'", "'") and "whoami" in shown


def test_whoami_in_slack_and_in_the_console() -> None:
    who = WhoAmI(
        "U0STU",
        AccessRole.NONE,
        (OwnedRole("default", "bob", LinkSource.LOGIN), OwnedRole("reporting", "bob_ro", LinkSource.CONFIG)),
        (_code("carol"),),
        SelfService.AUTO,
    )
    slack = render_blocks(who)
    assert "<@U0STU>" in json.dumps(slack.blocks)
    text = render_text(who, CONSOLE)
    assert "bob (you proved a login)" in text and "bob_ro on reporting (configured" in text
    assert "Waiting for a login as carol with application_name=pgconn-link-7KQ2-M9XD" in text
    assert "free ends your roles' idle sessions at once" in text and "/pgconn" not in text


def _connection(pid: int, state: str) -> Connection:
    return Connection(
        pid=pid,
        role="bob",
        database="course",
        application="DBeaver",
        client_addr="10.0.0.5",
        client_port=50000,
        state=state,
        backend_start=NOW - timedelta(hours=1),
        xact_start=None,
        query_start=NOW - timedelta(minutes=5),
        state_change=NOW - timedelta(minutes=5),
        wait_event=None,
        query="SELECT 1",
        query_length=8,
        observed_at=NOW,
    )


def test_mine_carries_the_free_button_unless_self_service_is_off() -> None:
    bob = RoleInfo("bob", 2, superuser=False, can_login=True)
    state = OwnedRoleState(bob, [_connection(11, "idle"), _connection(12, "active")], [_connection(11, "idle")])
    mine = MyRoles("default", [state], SelfService.APPROVE)
    message = render_blocks(mine)
    buttons = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"], b["text"]["text"]) for b in buttons] == [
        (FREE_ACTION, "default", "Free my idle connections")
    ]
    text = render_text(mine, CONSOLE)
    assert "bob: 2/2 — at limit" in text and "1 idle (what free would end), 1 active" in text
    assert "free asks an approver" in text
    off = render_blocks(MyRoles("default", [state], SelfService.OFF))
    assert not [b for b in off.blocks if b["type"] == "actions"]


@pytest.mark.parametrize(
    ("problem", "words"),
    [
        (NotAnOwner("free", "default"), "free: you own no database role. /pgconn link <role> proves"),
        (LinkRefused("bob", LinkIssue.CONFIGURED, "U0A", "default"), "PGCONN_ROLE_OWNERS"),
        (LinkRefused("postgres", LinkIssue.PROTECTED, target="default"), "never self-service"),
        (LinkRefused("bob", LinkIssue.TOO_MANY_CODES), "link codes waiting already"),
        (LinkRefused("bob", LinkIssue.NEEDS_APPROVER, "U0A"), "Only approvers link or unlink someone else"),
    ],
)
def test_refusals_say_why(problem: object, words: str) -> None:
    assert words in render_text(problem)  # type: ignore[arg-type]


def test_app_home_shows_an_owner_their_roles_and_the_free_button() -> None:
    from bot.model.results import HomeView
    from bot.render.blocks import home_view

    owned = (OwnedRole("default", "bob", LinkSource.LOGIN), OwnedRole("reporting", "bob_ro", LinkSource.CONFIG))
    view = home_view(HomeView("U0STU", "none", [], [], True, owned=owned, self_service=SelfService.AUTO))
    shown = json.dumps(view)
    assert "You have no access" not in shown and "bob_ro on reporting" in shown
    buttons = [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {(b["action_id"], b["value"]) for b in buttons} == {(FREE_ACTION, "default"), (FREE_ACTION, "reporting")}
    off = home_view(HomeView("U0STU", "none", [], [], True, owned=owned, self_service=SelfService.OFF))
    assert not [b for b in off["blocks"] if b["type"] == "actions"]
    nobody = json.dumps(home_view(HomeView("U0X", "none", [], [], True)))
    assert "/pgconn link <role>" in nobody
