"""compose.yaml, the Dockerfile and .env.example agree with the interface, and with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from bot.config import Settings, load_settings
from tests.matrix.servers import MAJORS

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {str(field.validation_alias) for field in Settings.model_fields.values()}
INTERPOLATED = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}$")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def env_example() -> dict[str, str]:
    text = (ROOT / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


def test_compose_runs_postgres_and_the_bot_with_known_settings() -> None:
    bot, postgres = compose()["services"]["bot"], compose()["services"]["postgres"]
    assert bot["command"][0] == "pgconn-bot" and bot["command"][1] in ("serve", "socket")
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy" and "healthcheck" in postgres
    assert set(bot["environment"]) <= KNOWN


def test_compose_never_overrides_what_env_provides() -> None:
    """`environment:` outranks `env_file:`; each value there must be ${SAME_NAME:-default}, so a
    value set in .env (or the shell) wins and the default only fills a gap."""
    for name, value in compose()["services"]["bot"]["environment"].items():
        found = INTERPOLATED.match(str(value))
        assert found and found["name"] == name, f"{name}: {value!r} would override .env"


def test_compose_needs_no_recent_compose_features() -> None:
    """`env_file` entries with `required:` need Docker Compose 2.24+: plain paths only."""
    env_file = compose()["services"]["bot"]["env_file"]
    entries = env_file if isinstance(env_file, list) else [env_file]
    assert entries == [".env"]


def test_compose_postgres_is_a_major_the_matrix_tests() -> None:
    postgres = compose()["services"]["postgres"]
    image = re.fullmatch(r"postgres:(\d+)(?:[.-][\w.-]+)?", postgres["image"])
    assert image, postgres["image"]
    major = int(image[1])
    assert major in MAJORS, f"postgres:{major} is not in tests/matrix/servers.py MAJORS {MAJORS}"
    mount = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"  # 18's image moved PGDATA
    assert any(volume.split(":")[1] == mount for volume in postgres["volumes"]), postgres["volumes"]
    assert f"# {major}: a major the CI matrix tests" in (ROOT / "compose.yaml").read_text()


def test_compose_defaults_reach_its_own_postgres() -> None:
    services = compose()["services"]
    for name in ("PGCONN_DATABASE_URL", "PGCONN_STATE_URL"):
        found = INTERPOLATED.match(services["bot"]["environment"][name])
        assert found, name
        host = conninfo_to_dict(found["default"]).get("host")
        assert host in services, f"{name}'s default host {host!r} is not a compose service"


def test_env_example_names_only_known_settings() -> None:
    names = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert names and set(names) <= KNOWN
    assert len(names) == len(set(names))
    commented = re.findall(r"^#\s+([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert set(commented) <= KNOWN


def test_env_example_names_the_databases_over_tcp() -> None:
    """Without them the bot tries a Unix socket, which a container does not have."""
    example = env_example()
    for name in ("PGCONN_DATABASE_URL", "PGCONN_STATE_URL"):
        host = conninfo_to_dict(example[name]).get("host", "")
        assert host and not host.startswith("/"), f"{name} must name a TCP host"
        assert host not in ("127.0.0.1", "localhost", "::1"), f"{name}: inside a container that is the container"
        # copied unchanged, it is what compose.yaml would use anyway: `docker compose up` works
        assert host in compose()["services"], f"{name}: {host!r} is not a compose service"
    text = (ROOT / ".env.example").read_text()
    assert "127.0.0.1" in text and "container" in text  # the comment saying why not 127.0.0.1


def test_env_example_copied_unchanged_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.target_dsns()["default"] == env_example()["PGCONN_DATABASE_URL"]
    assert settings.state_dsn() == env_example()["PGCONN_STATE_URL"]


def test_dockerfile_is_slim_non_root_with_healthcheck_and_serve() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.11-slim") == 2  # multi-stage
    assert "pip install --no-cache-dir ." in dockerfile  # what .ci/run exercises
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE)
    assert "EXPOSE ${PORT}" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert dockerfile.rstrip().endswith('CMD ["pgconn-bot", "serve"]')
    assert "--no-cache-dir ." in (ROOT / ".ci" / "run").read_text()


def test_the_image_build_context_leaves_out_secrets_and_tests() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", "tests", "bench"} <= set(ignored)
