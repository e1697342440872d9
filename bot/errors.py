"""Turning exceptions into the one line a user or an operator reads."""

from __future__ import annotations

import logging

from bot.model.errors import KNOWN_FAILURES


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def log_failure(logger: logging.Logger, level: int, message: str, *args: object, exc: BaseException) -> None:
    """Log ``message % args`` with the failure's first line; with its traceback too when the
    failure is not one the bot knows to happen (a database or Slack away is; anything else is a
    bug, and the traceback is what finds it)."""
    known = isinstance(exc, KNOWN_FAILURES)
    logger.log(level, message + ": %s", *args, first_line(exc), exc_info=None if known else exc)
