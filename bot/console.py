"""``pgconn-bot console``: the same commands and answers, in a terminal, without Slack."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from typing import TextIO

from bot.errors import first_line
from bot.model.access import Identity
from bot.render.text import render_text
from bot.runtime import Runtime

log = logging.getLogger(__name__)

PROMPT = "pgconn> "
BANNER = "pgconn-bot console — type `help`, `as <SLACK_USER_ID>` to switch identity, `quit` to leave."


def local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def default_identity() -> str:
    return f"local:{local_user()}"


def console_origin() -> str:
    """What the audit records for actions typed here: never mistaken for a Slack click."""
    return f"console, local user {local_user()}"


async def run_console(runtime: Runtime, identity: str, stdin: TextIO, stdout: TextIO) -> int:
    """Read commands from ``stdin`` until EOF or ``quit``, each answered in plain text; ``as ID``
    switches identity. One failing line never ends the session."""
    interactive = stdin.isatty()
    who = Identity(user_id=identity, origin=console_origin())

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    if interactive:
        say(BANNER)
    loop = asyncio.get_running_loop()
    while True:
        if interactive:
            stdout.write(PROMPT)
            stdout.flush()
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            break
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.lower() in ("quit", "exit", r"\q"):
            break
        words = text.split()
        if words[0].lower() == "as":
            if len(words) != 2:
                say("usage: as <SLACK_USER_ID>")
                continue
            who = Identity(user_id=words[1], origin=console_origin())
            say(f"now acting as {who.user_id}")
            continue
        try:
            outcome = await runtime.service.handle(text, who)
            say(render_text(outcome.result))
        except Exception as exc:  # one bad line must not end the session
            log.exception("console command failed")
            say(f"✗ Something went wrong: {first_line(exc)}")
        say("")
    return 0


def console_main(runtime: Runtime, identity: str | None) -> int:
    async def main() -> int:
        await runtime.start(require_state=False)
        try:
            return await run_console(runtime, identity or default_identity(), sys.stdin, sys.stdout)
        finally:
            await runtime.stop()

    return asyncio.run(main())
