"""``pgconn-bot console`` on a real terminal (a pseudo-terminal): line editing and history,
Ctrl-C at the prompt and during a command, Ctrl-D, answers without log lines, and no state
created by reading; ``pgconn-bot drop-state`` removes it again."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PgWorld
from tests.e2e.test_processes import bot_env

PROMPT = "pgconn> "


def _own_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is the pty, so that Ctrl-C
    typed there is SIGINT to it, as in a real terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A process on a pseudo-terminal; ``expect`` waits (with a deadline) for text to appear."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True, preexec_fn=_own_terminal
        )
        os.close(slave)
        self.seen = ""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, text: str, timeout: float = 20.0) -> str:
        """Everything read up to and including ``text``; what follows stays for the next call."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{text!r} did not appear before the end:\n{self.seen}")
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        before, _, after = self.seen.partition(text)
        self.seen = after
        return before + text

    def wait_until_reading(self) -> None:
        """Until the process sleeps in select on the terminal (readline waiting for a key).
        CPython's readline notices a signal only when it interrupts that wait: one that lands
        between printing the prompt and the wait is seen at the next key, which no person could
        press in that time, but a test can."""
        self._wait_in_kernel("poll_schedule_timeout", "do_select")

    def wait_until_running(self) -> None:
        """Until the process sleeps in its event loop (epoll): a command is under way."""
        self._wait_in_kernel("ep_poll", "do_epoll_wait")

    def _wait_in_kernel(self, *functions: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        wchan = Path(f"/proc/{self.process.pid}/wchan")
        while not wchan.read_text().startswith(functions):
            assert time.monotonic() < deadline, f"not in {functions}: {wchan.read_text()!r}\n{self.seen}"
            time.sleep(0.01)

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=15)
        os.close(self.master)
        return code


@pytest.fixture
def terminal_env(pg_dsn: str, fresh_state_dsn: str, tmp_path: Path) -> dict[str, str]:
    return bot_env(
        PGCONN_DATABASE_URL=pg_dsn,
        PGCONN_STATE_URL=fresh_state_dsn,
        PGCONN_REQUESTERS="U0TA",
        PGCONN_APPROVERS="U0DBA",
        HOME=str(tmp_path),  # the history file goes here
        TERM="xterm",
    )


@pytest.fixture
def console(terminal_env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal([sys.executable, "-m", "bot", "console", "--as", "U0TA"], terminal_env)
    yield term
    term.close()


def schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgconn'").fetchone()
    return row == (1,)


def test_line_editing_history_ctrl_c_and_ctrl_d(world: PgWorld, console: Terminal) -> None:
    bob = world.role("bob", limit=5)
    world.connect(bob)
    console.expect("Ctrl-D to leave")
    console.expect(PROMPT)

    console.send("limix\x7ft " + bob + "\r")  # a typo, corrected with backspace
    assert "1/5" in console.expect(PROMPT)

    console.send("\x1b[A\r")  # arrow up: the same command again, not ^[[A
    again = console.expect(PROMPT)
    assert "1/5" in again and "^[[A" not in again

    console.send("list half-typed")
    console.expect("list half-typed")
    console.wait_until_reading()
    console.send("\x03")  # Ctrl-C at the prompt: the line is dropped at once, a new prompt
    console.expect(PROMPT, timeout=5)
    console.send("help\r")
    shown = console.expect(PROMPT)
    assert "  list bob" in shown and "/pgconn" not in shown, shown
    assert "INFO" not in shown

    console.send("\x04")  # Ctrl-D leaves
    assert console.process.wait(timeout=15) == 0


def test_ctrl_c_stops_a_running_command_and_the_session_goes_on(terminal_env: dict[str, str]) -> None:
    with socket.socket() as frozen:  # takes connections (the kernel does) and never answers
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(64)
        port = frozen.getsockname()[1]
        env = terminal_env | {
            "PGCONN_TARGETS": json.dumps({"frozen": f"postgresql://pgct_nobody@127.0.0.1:{port}/x"}),
            "PGCONN_COMMAND_TIMEOUT": "30",
        }
        term = Terminal([sys.executable, "-m", "bot", "console"], env)
        try:
            term.expect(PROMPT)
            term.send("status --db frozen\r")
            term.expect("status --db frozen")  # echoed: the line was taken
            term.wait_until_running()  # the command now waits up to 30 s for the frozen server
            started = time.monotonic()
            term.send("\x03")
            term.expect(PROMPT, timeout=10)
            assert time.monotonic() - started < 10
            term.send("status\r")
            shown = term.expect(PROMPT)
            assert "usable connection slots" in shown and "Traceback" not in shown, shown
            term.send("quit\r")
            assert term.process.wait(timeout=15) == 0
        finally:
            term.close()


def test_reading_creates_nothing_the_first_kill_says_where_and_drop_state_removes_it(
    world: PgWorld, console: Terminal, terminal_env: dict[str, str]
) -> None:
    bob = world.role("bob")
    pid = world.pid_of(world.connect(bob, "left-open"))
    state = terminal_env["PGCONN_STATE_URL"]
    console.expect(PROMPT)
    for command in (f"list {bob}", "status", "limits", "requests", "audit"):
        console.send(command + "\r")
        shown = console.expect(PROMPT)
        assert "Traceback" not in shown and "INFO" not in shown, shown
    assert "Nothing recorded yet" in shown
    assert not schema_exists(state)

    console.send(f"kill {pid}\r")
    shown = console.expect(PROMPT)
    assert "keeps requests and the audit trail in schema pgconn of database" in shown, shown
    assert "drop-state" in shown and f"Request #1 created: terminate pid {pid}" in shown
    assert schema_exists(state)
    console.send(f"cancel {pid}\r")
    assert "schema pgconn of database" not in console.expect(PROMPT)  # said once
    console.send("quit\r")
    assert console.process.wait(timeout=15) == 0

    refused = subprocess.run(
        [sys.executable, "-m", "bot", "drop-state"], env=terminal_env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--yes" in refused.stdout, refused.stdout + refused.stderr
    assert "1 request" in refused.stdout and "audit entr" in refused.stdout
    assert schema_exists(state)

    asked = Terminal([sys.executable, "-m", "bot", "drop-state"], terminal_env)
    try:
        asked.expect("to remove it: ")
        asked.send("not-the-name\r")
        asked.expect("Not removed.")
        assert asked.process.wait(timeout=15) == 2
    finally:
        asked.close()
    assert schema_exists(state)

    done = subprocess.run(
        [sys.executable, "-m", "bot", "drop-state", "--yes"],
        env=terminal_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Removed schema pgconn" in done.stdout, done.stdout + done.stderr
    assert not schema_exists(state)
    again = subprocess.run(
        [sys.executable, "-m", "bot", "drop-state", "--yes"],
        env=terminal_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "Nothing to remove" in again.stdout


def test_drop_state_is_refused_while_a_replica_runs_on_it(terminal_env: dict[str, str]) -> None:
    state = terminal_env["PGCONN_STATE_URL"]
    import asyncio

    from bot.db.state import StateStore

    async def migrate() -> None:
        store = StateStore(state)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())
    with psycopg.connect(state, autocommit=True) as conn:
        conn.execute("INSERT INTO pgconn.replica (id, name, seen_at) VALUES (gen_random_uuid(), 'elsewhere:1', now())")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "drop-state", "--yes"],
        env=terminal_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "1 replica of the bot ran on it" in done.stdout, done.stdout
    assert schema_exists(state)


def test_sigint_from_elsewhere_at_the_prompt_gives_a_new_prompt(terminal_env: dict[str, str]) -> None:
    term = Terminal([sys.executable, "-m", "bot", "console"], terminal_env)
    try:
        term.expect(PROMPT)
        term.wait_until_reading()
        term.process.send_signal(signal.SIGINT)  # as Ctrl-C from elsewhere: same as at the prompt
        term.expect(PROMPT, timeout=5)
        term.send("quit\r")
        assert term.process.wait(timeout=15) == 0
    finally:
        term.close()


def test_a_student_links_and_frees_in_the_console(world: PgWorld, terminal_env: dict[str, str]) -> None:
    bob = world.role("bob", limit=2)
    term = Terminal(
        [sys.executable, "-m", "bot", "console", "--as", "U0STUDENT"], terminal_env | {"PGCONN_SELF_SERVICE": "auto"}
    )
    try:
        term.expect(PROMPT)
        term.send(f"link {bob}\r")
        shown = term.expect(PROMPT)
        found = re.search(r"pgconn-link-([2-9A-Z]{4}-[2-9A-Z]{4})", shown)
        assert found and "Then type whoami here" in shown, shown
        proof = world.connect(bob, found.group(0))
        term.send("whoami\r")
        assert f"You own: {bob} (you proved a login)" in term.expect(PROMPT)
        proof.close()

        idle = [world.pid_of(world.connect(bob, "DBeaver")) for _ in range(2)]  # 2/2: locked out
        term.send("free\r")
        shown = term.expect(PROMPT)
        assert "Freed: 2 idle sessions of yours ended" in shown, shown
        rows = world.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (idle,)).fetchone()
        assert rows == (0,)
        term.send("quit\r")
        assert term.process.wait(timeout=15) == 0
    finally:
        term.close()
