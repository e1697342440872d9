"""Turning exceptions into the one line a user or an operator reads."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
