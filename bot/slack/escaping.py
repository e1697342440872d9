"""Slash-command text as Slack sends it (``should_escape: true``), back to what the user typed.

With escaping on, Slack sends ``&``, ``<`` and ``>`` typed by the user as ``&amp;``, ``&lt;`` and
``&gt;``, so every raw ``<…>`` in the text is markup Slack made from something picked in the
composer: ``<@U0123ABC|alice>``, ``<#C0123ABC|general>``, ``<!subteam^S0123|@ops>``, ``<!here>``,
``<https://example.com|example.com>``. ``unescape_command_text`` rewrites that markup into the
form the parser reads and then decodes the three entities, once and last.

Markup is only recognised in the raw text, never in decoded text: a user who types
``<@U0123|boss>`` by hand sends ``&lt;@U0123|boss&gt;``, which comes back as exactly those
characters. Raw ``<`` that is not one of the forms below (a client sending without escaping)
is left alone.
"""

from __future__ import annotations

import re

__all__ = ["unescape_command_text"]

# One alternative per kind of markup; the label after ``|`` is optional and may be empty.
_MARKUP = re.compile(
    r"""
    <(?:
        @(?P<user>[UW][A-Z0-9]+)                (?:\|[^<>]*)?
      | \#(?P<channel>[CG][A-Z0-9]+)            (?:\|(?P<channel_name>[^<>]*))?
      | !subteam\^(?P<group>S[A-Z0-9]+)         (?:\|[^<>]*)?
      | !(?P<special>here|channel|everyone)     (?:\|[^<>]*)?
      | (?P<url>(?i:https?://|mailto:)[^\s<>|]+) (?:\|[^<>]*)?
    )>
    """,
    re.VERBOSE,
)
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}


def _plain(match: re.Match[str]) -> str:
    if user := match.group("user"):
        return f"<@{user}>"
    if channel := match.group("channel"):
        name = (match.group("channel_name") or "").lstrip("#")
        return f"#{name}" if name else f"<#{channel}>"
    if group := match.group("group"):
        return f"<!subteam^{group}>"
    if special := match.group("special"):
        return f"<!{special}>"
    return match.group("url")


def unescape_command_text(text: str) -> str:
    """What the user typed, from the ``text`` of a slash command Slack escaped.

    - ``<@U0123ABC|alice>``, ``<@U0123ABC>`` (and ``W…`` ids) → ``<@U0123ABC>``
    - ``<#C0123ABC|general>`` → ``#general``; ``<#C0123ABC>`` (or an empty name) → ``<#C0123ABC>``
    - ``<!subteam^S0123|@ops>`` → ``<!subteam^S0123>``
    - ``<!here>``, ``<!channel>``, ``<!everyone>`` kept (a label, ``<!here|here>``, is dropped)
    - ``<https://example.com|example.com>``, ``<mailto:a@b.org|a@b.org>`` → the URL alone
    - then ``&lt;`` ``&gt;`` ``&amp;`` → ``<`` ``>`` ``&``, in one pass (``&amp;lt;`` → ``&lt;``)

    Anything else is unchanged. Never raises.
    """
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], _MARKUP.sub(_plain, text))
