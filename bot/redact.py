"""Secrets never leave the process: not in logs, errors, answers or Slack messages.

Connection strings may hold passwords, and libpq's own error messages can quote parts of a
malformed one (``invalid percent-encoded token: "S3cr%ZZet"``). Every secret the bot is
configured with is registered here once, at start; ``redact`` removes registered secrets and
anything shaped like a password in a connection string from any text.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"
_MIN_SECRET = 4  # shorter "secrets" would mask ordinary words

_URL_PASSWORD = re.compile(r"(?P<head>postgres(?:ql)?://[^\s:/@?#]*:)(?P<secret>[^\s@]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s']+)", re.IGNORECASE)

_lock = threading.Lock()
_registered: set[str] = set()


def secrets_in_dsn(dsn: str) -> set[str]:
    """The password of a connection string, raw and decoded, however malformed the string is."""
    found: set[str] = set()
    for pattern in (_URL_PASSWORD, _KV_PASSWORD):
        for match in pattern.finditer(dsn):
            raw = match.group("secret").strip("'")
            found.add(raw)
            with contextlib.suppress(UnicodeDecodeError):
                found.add(unquote(raw, errors="strict"))
    return {secret for secret in found if len(secret) >= _MIN_SECRET}


def register(*secrets: str | None) -> None:
    """Remember secrets (tokens, passwords) so ``redact`` removes them wherever they turn up."""
    with _lock:
        _registered.update(s for s in secrets if s and len(s) >= _MIN_SECRET)


def register_dsns(dsns: Iterable[str]) -> None:
    for dsn in dsns:
        register(*secrets_in_dsn(dsn))


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without any registered secret, password-shaped part of a DSN, or ``extra`` secret."""
    with _lock:
        secrets = sorted({*_registered, *(s for s in extra if s and len(s) >= _MIN_SECRET)}, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


class RedactingFilter(logging.Filter):
    """Applied to the log handler: a message (and traceback) never carries a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
