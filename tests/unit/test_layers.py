"""The layering CONTRIBUTING.md describes, enforced: each package imports only what it may.

model ← core ← (db, render) ← slack ← wiring. The model imports nothing of the bot's; the core
never sees a database driver, Slack or how anything is worded; db and render never reach into the
core; nothing but the wiring (runtime, server, cli, console, doctor) puts db and Slack together.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[2] / "bot"
INFRA = {"bot.errors", "bot.metrics", "bot.redact", "bot.logs"}  # what any layer may use

# package → (bot packages it may import, third-party top-level modules it must not import)
RULES: dict[str, tuple[set[str], set[str]]] = {
    "bot.model": ({"bot.model"}, {"psycopg", "psycopg_pool", "slack_sdk", "slack_bolt", "aiohttp", "pydantic"}),
    "bot.core": ({"bot.model", "bot.core", *INFRA}, {"psycopg", "psycopg_pool", "slack_sdk", "slack_bolt", "aiohttp"}),
    "bot.db": ({"bot.model", "bot.db", *INFRA}, {"slack_sdk", "slack_bolt", "aiohttp"}),
    "bot.render": ({"bot.model", "bot.render", *INFRA}, {"psycopg", "psycopg_pool", "slack_sdk", "slack_bolt"}),
    "bot.slack": ({"bot", "bot.model", "bot.core", "bot.render", "bot.slack", *INFRA}, {"psycopg", "psycopg_pool"}),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(BOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (at any depth of the code, not only at the top)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _allowed(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(RULES))
def test_each_layer_imports_only_what_it_may(package: str) -> None:
    allowed, forbidden = RULES[package]
    wrong = []
    for path in sorted((BOT / package.removeprefix("bot.").replace(".", "/")).rglob("*.py")):
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            if top == "bot":
                name = imported if imported != "bot" else "bot"
                # "from bot import metrics" names bot.metrics; "from bot.model import codec" is bot.model.codec.
                if name == "bot" or _allowed(name, allowed) or _is_package_of_allowed(name, allowed):
                    continue
                wrong.append(f"{_module_name(path)}:{line} imports {imported}")
            elif top in forbidden:
                wrong.append(f"{_module_name(path)}:{line} imports {imported}")
    assert not wrong, "\n".join(wrong)


def _is_package_of_allowed(name: str, allowed: set[str]) -> bool:
    """``from bot.model import codec`` yields both ``bot.model`` and ``bot.model.codec``: the
    package itself is fine when something under it is allowed."""
    return any(a.startswith(name + ".") for a in allowed)


def test_the_model_is_pure() -> None:
    """No I/O in the model: it does not even import asyncio."""
    for path in (BOT / "model").rglob("*.py"):
        for line, imported in _imports(path):
            assert imported.split(".")[0] not in {"asyncio", "socket", "os", "subprocess"}, f"{path}:{line}"


def test_every_package_is_covered() -> None:
    packages = {f"bot.{p.name}" for p in BOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(RULES) | {"bot.slack.listeners"}, packages - set(RULES)
    assert sys.version_info >= (3, 11)
