"""``pgconn-bot console``: the same commands and answers, in a terminal, without Slack.

Interactive (a terminal): line editing and history (readline), Ctrl-C clears the line at the
prompt and stops a command that is running, Ctrl-D or ``quit`` leaves. Piped: one command a line,
no prompt. Either way the answers go to stdout and only warnings and errors to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from bot.core.commands import Decide, FreeMine, LinkRole, ParseError, RequestSignal, UnlinkRole, spec_of
from bot.core.parser import parse_command
from bot.errors import first_line
from bot.model.access import Identity
from bot.model.problems import StateUnavailable
from bot.render.text import CONSOLE, render_text, state_created_note
from bot.runtime import Runtime

log = logging.getLogger(__name__)

PROMPT = "pgconn> "
BANNER = (
    "pgconn-bot console — type `help`, `as <SLACK_USER_ID>` to switch identity, "
    "`quit` or Ctrl-D to leave (Ctrl-C clears the line)."
)
HISTORY_FILE = "~/.pgconn_bot_history"
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


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


class Console:
    """One console session: an identity, and a runtime whose state schema is created only when a
    command first needs to write to it (reading never creates anything)."""

    def __init__(self, runtime: Runtime, identity: str, say: Callable[[str], None]) -> None:
        self.runtime = runtime
        self.who = Identity(user_id=identity, origin=console_origin())
        self.say = say

    async def line(self, text: str) -> bool:
        """Answer one line; False when it asks to leave. One failing line never ends the session."""
        text = text.strip()
        if not text or text.startswith("#"):
            return True
        if text.lower() in ("quit", "exit", r"\q"):
            return False
        words = text.split()
        if words[0].lower() == "as":
            self._switch(words[1:])
            return True
        try:
            self.say(await self._answer(text))
        except Exception as exc:  # one bad line must not end the session
            log.exception("console command failed")
            self.say(f"✗ Something went wrong: {first_line(exc)}")
        self.say("")
        return True

    def _switch(self, args: list[str]) -> None:
        if len(args) != 1:
            self.say("usage: as <SLACK_USER_ID>")
            return
        self.who = Identity(user_id=args[0], origin=console_origin())
        self.say(f"now acting as {self.who.user_id}")
        if not _SLACK_USER_ID.match(args[0]):
            self.say(
                f"note: {args[0]!r} is not a Slack user ID (U… or W…): PGCONN_VIEWERS, PGCONN_REQUESTERS and "
                "PGCONN_APPROVERS list IDs, so it gets only PGCONN_DEFAULT_ROLE"
            )

    async def _answer(self, text: str) -> str:
        command = parse_command(text)
        if not isinstance(command, ParseError) and spec_of(command).needs_state and self.runtime.state_absent:
            if not isinstance(command, RequestSignal | Decide | LinkRole | UnlinkRole | FreeMine):
                # Reading what was never written: say so, create nothing.
                return render_text(StateUnavailable(spec_of(command).name, created=False), CONSOLE)
            where = await self.runtime.prepare_state()
            self.say(state_created_note(where.database, where.where))
        outcome = await self.runtime.service.handle(text, self.who)
        return render_text(outcome.result, CONSOLE)


async def run_console(runtime: Runtime, identity: str, stdin: TextIO, stdout: TextIO) -> int:
    """Read commands from ``stdin`` (piped: no prompt, no line editing) until EOF or ``quit``."""

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    console = Console(runtime, identity, say)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stdin.readline)
        if not line or not await console.line(line):
            return 0


def _interactive(runner: asyncio.Runner, console: Console) -> int:
    """The terminal loop: ``input`` on the main thread (readline editing and history; Ctrl-C
    raises at once), each command run on the console's event loop."""
    history = _load_history()
    console.say(BANNER)
    try:
        while True:
            running = False
            try:
                line = input(PROMPT)
                running = True
                if not runner.run(console.line(line)):
                    return 0
            except KeyboardInterrupt:
                # At the prompt, like psql: the line is dropped. During a command: it is stopped
                # (Runner cancels it), and the session goes on.
                sys.stdout.write("\n(stopped)\n\n" if running else "\n")
            except EOFError:
                sys.stdout.write("\n")
                return 0
    finally:
        history()


def _load_history() -> Callable[[], None]:
    """readline's line editing, with history kept in HISTORY_FILE; returns what saves it."""
    try:
        import readline
    except ImportError:  # no readline (Windows): plain input still works
        return lambda: None
    path = Path(os.path.expanduser(HISTORY_FILE))
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)

    def save() -> None:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)

    return save


def console_main(runtime: Runtime, identity: str | None) -> int:
    """``pgconn-bot console``: interactive on a terminal, a command a line when piped."""
    who = identity or default_identity()
    with asyncio.Runner() as runner:
        runner.run(runtime.start(require_state=False, create_state=False))
        try:
            if sys.stdin.isatty():
                return _interactive(runner, Console(runtime, who, _print))
            return runner.run(run_console(runtime, who, sys.stdin, sys.stdout))
        finally:
            runner.run(runtime.stop())


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
