"""Slash-command text as Slack sends it with ``should_escape: true``, back to what was typed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.commands import ListConnections, RequestSignal
from bot.core.parser import parse_command
from bot.slack.escaping import unescape_command_text


def slack_escape(typed: str) -> str:
    """What Slack does to characters a user types (the three entities, nothing else)."""
    return typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize(
    ("sent", "typed"),
    [
        # user mentions: the id only, the name dropped; W… (Enterprise Grid) ids too
        ("list <@U0123ABC|alice>", "list <@U0123ABC>"),
        ("list <@U0123ABC>", "list <@U0123ABC>"),
        ("list <@W0123ABC|alice.smith>", "list <@W0123ABC>"),
        ("list <@U0123ABC|>", "list <@U0123ABC>"),
        ("<@U3VP4CLCR|steven.haines> next <@U123ABC|jdoe>", "<@U3VP4CLCR> next <@U123ABC>"),
        # channels: #name when Slack gives one, else the id
        ("status <#C0123ABC|general>", "status #general"),
        ("status <#C0123ABC>", "status <#C0123ABC>"),
        ("status <#C0123ABC|>", "status <#C0123ABC>"),  # private channels come without a name
        ("status <#G0123ABC|secret-room>", "status #secret-room"),
        # user groups: the id only
        ("list <!subteam^S0123|@ops>", "list <!subteam^S0123>"),
        ("list <!subteam^S0123>", "list <!subteam^S0123>"),
        # special mentions kept
        ("ping <!here>", "ping <!here>"),
        ("ping <!channel>", "ping <!channel>"),
        ("ping <!everyone>", "ping <!everyone>"),
        ("ping <!here|here>", "ping <!here>"),
        # links: the URL alone
        ("see <https://example.com|example.com>", "see https://example.com"),
        ("see <https://example.com>", "see https://example.com"),
        ("see <http://example.com/a?b=1&amp;c=2|example.com/a?b=1&amp;c=2>", "see http://example.com/a?b=1&c=2"),
        ("mail <mailto:dba@example.org|dba@example.org>", "mail mailto:dba@example.org"),
        ("mail <mailto:dba@example.org>", "mail mailto:dba@example.org"),
        # entities, decoded last and exactly once
        ("list a&amp;b &lt;x&gt;", "list a&b <x>"),
        ("list &lt;nosuch&gt;", "list <nosuch>"),
        ("list &amp;lt;x&amp;gt;", "list &lt;x&gt;"),  # the user typed &lt;x&gt;
        ("list &amp;amp;", "list &amp;"),
        ("list &amp;", "list &"),
        ('kill 4711 --reason "a &lt;b&gt; &amp; c"', 'kill 4711 --reason "a <b> & c"'),
        # typed markup arrives escaped, and stays what was typed (it is not a real mention)
        ("list &lt;@U0BOSS|boss&gt;", "list <@U0BOSS|boss>"),
        ("list &lt;!channel&gt;", "list <!channel>"),
        ("&lt;https://evil.example|login&gt;", "<https://evil.example|login>"),
        # everything together
        (
            'kill user bob --reason "for <@U0REQ|sam> &amp; <#C0DB|dba>, see <https://wiki.example/x|wiki>"',
            'kill user bob --reason "for <@U0REQ> & #dba, see https://wiki.example/x"',
        ),
        # no markup: unchanged
        ('kill 4711 --reason "left open"', 'kill 4711 --reason "left open"'),
        ("", ""),
        ("list bob --db reporting", "list bob --db reporting"),
        ("list Ünïcødé “quoted”", "list Ünïcødé “quoted”"),
        # raw <, > and & from a client that does not escape: left alone
        ("list <role>", "list <role>"),
        ('kill 1 --reason "a < b > c & d"', 'kill 1 --reason "a < b > c & d"'),
        ("a <b> & c", "a <b> & c"),
        (
            "<<>> <@> <@u123> <#> <!> <!subteam^> <!nobody> <ftp://x> <https://>",
            "<<>> <@> <@u123> <#> <!> <!subteam^> <!nobody> <ftp://x> <https://>",
        ),
        ("<@U0123ABC", "<@U0123ABC"),
        ("&foo; &#60; &LT; &amp", "&foo; &#60; &LT; &amp"),
        # other Slack markup is not touched
        ("<!date^1392734382^{date}|Feb 18>", "<!date^1392734382^{date}|Feb 18>"),
    ],
)
def test_unescape_command_text(sent: str, typed: str) -> None:
    assert unescape_command_text(sent) == typed


def test_the_parser_reads_the_result() -> None:
    assert parse_command(unescape_command_text("list &lt;nosuch&gt;")) == ListConnections(role="<nosuch>")
    command = parse_command(unescape_command_text('kill 4711 --reason "a &lt;b&gt; &amp; c"'))
    assert isinstance(command, RequestSignal) and command.reason == "a <b> & c"
    assert parse_command(unescape_command_text("list <@U0123ABC|alice>")) == ListConnections(role="<@U0123ABC>")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300))
def test_never_raises(text: str) -> None:
    assert isinstance(unescape_command_text(text), str)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("<>&@#!^|:/;ltgampUWCSh0123 xyz"), max_size=60))
def test_never_raises_on_markup_like_fragments(text: str) -> None:
    assert isinstance(unescape_command_text(text), str)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_characters="<&"), max_size=300))
def test_plain_text_is_unchanged(text: str) -> None:
    assert unescape_command_text(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet=st.sampled_from("<>&@#!|ltgamp;U1 "), max_size=40))
def test_whatever_was_typed_comes_back_once(typed: str) -> None:
    # Without markup picked in the composer, Slack only escapes: decoding gives back the typed text
    # exactly (decoding twice would turn a typed "&lt;" into "<").
    assert unescape_command_text(slack_escape(typed)) == typed
