"""The command grammar, including hostile input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.commands import (
    BY_NAME,
    Decide,
    FindStray,
    Help,
    ListConnections,
    ParseError,
    RequestSignal,
    ShowAudit,
    ShowLimit,
    ShowLimits,
    ShowStatus,
    spec_of,
)
from bot.core.parser import parse_command
from bot.model.requests import KillScope, SignalAction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list bob", ListConnections(role="bob")),
        ("/pgconn list bob", ListConnections(role="bob")),
        ("LIST bob --db reporting", ListConnections(role="bob", target="reporting")),
        ("list --db=reporting bob", ListConnections(role="bob", target="reporting")),
        ('list "Mixed Case"', ListConnections(role="Mixed Case")),
        ("limit bob", ShowLimit(role="bob")),
        ("limits", ShowLimits()),
        ("limits --db b", ShowLimits(target="b")),
        ("stray bob", FindStray(role="bob")),
        ("stray bob --idle 30m", FindStray(role="bob", min_idle=timedelta(minutes=30))),
        ("stray bob --idle 1h30m", FindStray(role="bob", min_idle=timedelta(minutes=90))),
        ("status", ShowStatus()),
        ("", Help()),
        ("   ", Help()),
        ("help", Help()),
        ("help stray", Help(topic="stray")),
        ("help LS", Help(topic="list")),  # an alias is its subcommand
        ("help nosuch", Help(unknown="nosuch")),
        ("help " + "x" * 40, Help(unknown="x" * 29 + "…")),
        ("stray bob --idle 90min", FindStray(role="bob", min_idle=timedelta(minutes=90))),
        ("stray bob --idle 1d", FindStray(role="bob", min_idle=timedelta(days=1))),
        ("audit", ShowAudit(count=10)),
        ("audit 25", ShowAudit(count=25)),
        ("approve 12", Decide(request_id=12, approve=True)),
        ("deny #12", Decide(request_id=12, approve=False)),
    ],
)
def test_valid_commands(text: str, expected: object) -> None:
    assert parse_command(text) == expected


def test_kill_forms() -> None:
    assert parse_command("kill 4711 4712 4711") == RequestSignal(pids=(4711, 4712))
    assert parse_command('kill user bob --reason "locked out before the exam"') == RequestSignal(
        scope=KillScope.USER, role="bob", reason="locked out before the exam"
    )
    assert parse_command("kill idle bob --older 30m --db b") == RequestSignal(
        scope=KillScope.IDLE, role="bob", older_than=timedelta(minutes=30), target="b"
    )
    assert parse_command("cancel 4711") == RequestSignal(action=SignalAction.CANCEL, pids=(4711,))
    smart = parse_command("kill user bob --reason “exam tomorrow”")
    assert isinstance(smart, RequestSignal) and smart.reason == "exam tomorrow"


@pytest.mark.parametrize(
    ("text", "message", "usage_of"),
    [
        ("frobnicate", "unknown subcommand 'frobnicate'", None),
        ("list", "list needs a role name", "list"),
        ("list bob alice", "unexpected extra words after list: alice", "list"),
        ("list bob --bogus 1", "unknown option --bogus", "list"),
        ("list bob --db", "--db needs a value", "list"),
        ("list bob --db a --db b", "--db is given twice", "list"),
        ("status --idle 5m", "status does not take --idle", "status"),
        ("stray bob --idle 30", "needs a unit: 30s, 30m, 30h or 30d", "stray"),
        ("stray bob --idle soon", "'soon' is not a duration", "stray"),
        ("stray bob --idle 9999d", "longer than a year", "stray"),
        ("kill", "kill needs at least one pid", "kill"),
        ("kill abc", "'abc' is not a process id", "kill"),
        ("kill 0", "'0' is not a process id", "kill"),
        ("kill 99999999999", "is not a process id", "kill"),
        ("kill user", "kill needs a role name", "kill"),
        ("kill user bob --older 5m", "--older goes with kill idle", "kill"),
        ("kill user bob --older junk", "--older goes with kill idle", "kill"),
        ("kill 1 --reason ''", "--reason is empty", "kill"),
        ("audit 0", "N must be a whole number from 1 to 100", "audit"),
        ("approve x", "'x' is not a request id", "approve"),
        ('list "bob', "a quote is not closed", None),
        ("list " + "x" * 64, "at most 63 bytes", "list"),
        ("list bob; DROP TABLE x", "unexpected extra words", "list"),
        ("list bob\x00", "control characters", None),
        ("list \u202ebob", "control characters", None),
    ],
)
def test_errors_say_what_was_wrong_and_how_to_say_it(text: str, message: str, usage_of: str | None) -> None:
    result = parse_command(text)
    assert isinstance(result, ParseError), result
    assert message in result.message
    if usage_of:
        assert result.usage == BY_NAME[usage_of].usage
    else:
        assert "/pgconn" in result.usage


def test_too_long_input_is_refused_without_parsing() -> None:
    result = parse_command("list " + "a" * 5000)
    assert isinstance(result, ParseError) and "too long" in result.message


def test_semicolons_and_quotes_stay_inside_a_role_name() -> None:
    assert parse_command("""list "bob'; DROP ROLE x; --" """) == ListConnections(role="bob'; DROP ROLE x; --")


def test_unicode_role_names_are_accepted_up_to_63_bytes() -> None:
    assert parse_command("list Ünïcødé") == ListConnections(role="Ünïcødé")
    result = parse_command("list " + "é" * 32)  # 64 bytes
    assert isinstance(result, ParseError)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_command_or_a_parse_error(text: str) -> None:
    result = parse_command(text)
    if isinstance(result, ParseError):
        assert result.message and result.usage
        assert len(result.message) < 400  # quoted input is shortened
    else:
        assert spec_of(result).name


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "list",
                "kill",
                "user",
                "idle",
                "--db",
                "--idle",
                "--older",
                "--reason",
                "1",
                "30m",
                "bob",
                '"',
                "'",
                "=",
                "--db=x",
                "-",
                "--",
            ]
        ),
        max_size=8,
    )
)
def test_grammar_fragments_never_crash(words: list[str]) -> None:
    result = parse_command(" ".join(words))
    assert isinstance(result, ParseError) or spec_of(result).name


def test_surrogates_and_no_break_spaces() -> None:
    assert isinstance(parse_command("list \udcffbob"), ParseError)
    assert parse_command("list\u00a0bob") == ListConnections(role="bob")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=50))
def test_any_code_point_including_surrogates_is_handled(text: str) -> None:
    result = parse_command(text)
    assert isinstance(result, ParseError) or spec_of(result).name
