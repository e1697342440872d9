from __future__ import annotations

from datetime import timedelta

import pytest

from bot.model.durations import DurationError, format_duration, parse_duration, spell_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("2H", 7200),
        ("45sec", 45),
        ("90min", 5400),
        ("90MIN", 5400),
        ("1h30min", 5400),
        ("1d2h", 93600),
    ],
)
def test_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "30", "m", "30x", "1h 30m", "-5m", "1.5h", "30mm", "30minn", "30mins", "30secs", "30hour", "min"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_errors_name_every_unit() -> None:
    with pytest.raises(DurationError, match=r"30s, 30m, 30h or 30d"):
        parse_duration("30")
    with pytest.raises(DurationError, match=r"90s, 30m \(or 30min\), 2h, 1d or 1h30m"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (42, "42s"), (425, "7m 05s"), (11520, "3h 12m"), (187200, "2d 4h")]
)
def test_format(seconds: int, shown: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == shown


def test_format_none_and_spell() -> None:
    assert format_duration(None) == "—"
    assert spell_duration(timedelta(minutes=30)) == "30m"
    assert spell_duration(timedelta(seconds=90)) == "90s"
    assert spell_duration(timedelta(hours=2)) == "2h"
