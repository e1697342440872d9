"""compose.yaml, the Dockerfile and .env.example agree with the interface."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {str(field.validation_alias) for field in Settings.model_fields.values()}


def test_compose_runs_postgres_and_the_bot_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    bot, postgres = compose["services"]["bot"], compose["services"]["postgres"]
    assert bot["command"][0] == "pgconn-bot" and bot["command"][1] in ("serve", "socket")
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy" and "healthcheck" in postgres
    assert set(bot["environment"]) <= KNOWN


def test_env_example_names_only_known_settings() -> None:
    names = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert names and set(names) <= KNOWN


def test_dockerfile_is_slim_non_root_with_healthcheck_and_serve() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.11-slim") == 2  # multi-stage
    assert "pip install --no-cache-dir ." in dockerfile  # what .ci/run exercises
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE)
    assert "EXPOSE ${PORT}" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert dockerfile.rstrip().endswith('CMD ["pgconn-bot", "serve"]')
    assert "--no-cache-dir ." in (ROOT / ".ci" / "run").read_text()
