"""Secrets never leave the process: connection-string passwords, tokens, in any text or log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot import redact
from bot.cli import _JsonFormatter


@pytest.mark.parametrize(
    ("dsn", "text", "secrets"),
    [
        # libpq quoting part of a malformed URL in its error
        ("postgresql://bot:S3cr%ZZet@db/x", 'invalid percent-encoded token: "S3cr%ZZet"', {"S3cr%ZZet"}),
        ("postgresql://bot:hunter2@db/x", "postgresql://bot:hunter2@db/x failed", {"hunter2"}),
        ("host=db user=bot password=hunter2 dbname=x", "connecting to host=db password=hunter2", {"hunter2"}),
        ("host=db password='with space' dbname=x", "bad: password='with space'", {"with space"}),
        ("postgres://bot:p%40ss@db/x", "password p@ss or p%40ss", {"p%40ss", "p@ss"}),
    ],
)
def test_passwords_in_connection_strings_are_masked(dsn: str, text: str, secrets: set[str]) -> None:
    assert secrets <= redact.secrets_in_dsn(dsn)
    masked = redact.redact(text, redact.secrets_in_dsn(dsn))
    for secret in secrets:
        assert secret not in masked, masked
    assert "***" in masked


def test_registered_secrets_are_masked_in_json_logs_with_tracebacks() -> None:
    redact.register("xoxb-registered-secret-token")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(_JsonFormatter())
    handler.addFilter(redact.RedactingFilter())
    logger = logging.getLogger("pgct.redact")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("token xoxb-registered-secret-token refused")
        except RuntimeError:
            logger.exception("call with %s failed", "xoxb-registered-secret-token", stack_info=True)
    finally:
        logger.removeHandler(handler)
    line = json.loads(out.getvalue())
    assert "xoxb-registered-secret-token" not in out.getvalue()
    assert "***" in line["message"] and "***" in line["exception"]
