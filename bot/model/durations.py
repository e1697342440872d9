"""Durations as users type them (``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``; ``sec`` and ``min`` too)
and as the bot prints them."""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d{1,6})(sec|min|[smhd])")
_MAX = timedelta(days=365)


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    raw = text.strip().lower()
    if not raw:
        raise DurationError("a duration is empty")
    if raw.isdigit():
        raise DurationError(f"{text!r} needs a unit: {raw}s, {raw}m, {raw}h or {raw}d")
    position, seconds = 0, 0
    for match in _PART.finditer(raw):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(raw) or position == 0:
        raise DurationError(f"{text!r} is not a duration; use forms like 90s, 30m (or 30min), 2h, 1d or 1h30m")
    result = timedelta(seconds=seconds)
    if result > _MAX:
        raise DurationError(f"{text!r} is longer than a year")
    return result


def format_duration(value: timedelta | None) -> str:
    """Short, human: ``42s``, ``7m 05s``, ``3h 12m``, ``2d 4h``."""
    if value is None:
        return "—"
    total = max(0, int(value.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def spell_duration(value: timedelta) -> str:
    """The form a user would type back (``30m``), used in suggested commands."""
    total = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"
