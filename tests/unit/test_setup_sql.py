"""`pgconn-bot setup-sql` offline: what it prints, that the README shows exactly that, and the
names it refuses (one line on stderr, exit 2, nothing on stdout); --drain's opt-in section. Against a real server:
tests/e2e/test_setup_sql.py."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.budget import Budget
from bot.setup_sql import DRAIN_HELP, add_drain_argument, drain_databases, setup_sql
from bot.setup_sql import main as setup_sql_main

ROOT = Path(__file__).resolve().parents[2]


def run_setup_sql(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m bot setup-sql`` with no configuration but ``env`` (and no .env: ``cwd``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGCONN_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", "setup-sql", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def readme_block() -> str:
    """The ```sql block of the README's "Database privileges" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Database privileges\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert found, "no ```sql block under ## Database privileges"
    return found.group(1)


def test_the_readme_shows_exactly_what_setup_sql_prints_by_default(tmp_path: Path) -> None:
    done = run_setup_sql(tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert done.stdout == setup_sql() == readme_block()


@pytest.mark.parametrize("role", ["postgres", "pg_monitor", "public"])
def test_the_cli_refuses_reserved_names_with_one_line(tmp_path: Path, role: str) -> None:
    done = run_setup_sql(tmp_path, "--role", role)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgconn-bot setup-sql: ") and repr(role) in lines[0]
    assert "reserved" in lines[0] or "superuser" in lines[0]


@pytest.mark.parametrize(
    "role",
    [
        *("postgres", "Postgres", "pg_monitor", "pg_signal_backend", "pg_bot", "public", "PUBLIC", "none"),
        *("current_user", "session_user", "current_role", "user"),
    ],
)
def test_reserved_role_names_are_refused(role: str) -> None:
    with pytest.raises(ValueError, match=r"reserved|superuser"):
        setup_sql(role)


@pytest.mark.parametrize("role", ["x; DROP", "Robert'); DROP TABLE students;--", "x$$", "a" * 64, "1bot", ""])
def test_malformed_role_names_are_refused(role: str) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        setup_sql(role)


def test_ordinary_names_are_quoted_and_no_password_is_set() -> None:
    assert 'CREATE ROLE "select" LOGIN' in setup_sql("select")  # a keyword, but quoted it is valid
    assert 'CREATE ROLE "postgres_bot" LOGIN' in setup_sql("postgres_bot")
    assert "PASSWORD" not in setup_sql()


def test_by_default_the_state_goes_where_the_sql_runs_and_no_other_database_is_suggested() -> None:
    text = setup_sql()
    assert "CREATE DATABASE" not in text and "current_database()" in text
    urls = re.findall(r"PGCONN_(?:DATABASE|STATE)_URL=postgresql://pgconn_bot@[^/]+/(\w+)", text)
    assert urls == ["postgres", "postgres"]  # the database it tells you to run it in


def test_a_state_database_of_its_own_is_created_and_suggested() -> None:
    text = setup_sql(state_database="pgconn_state")
    assert 'CREATE DATABASE "pgconn_state";\nGRANT CREATE ON DATABASE "pgconn_state" TO "pgconn_bot";' in text
    assert "PGCONN_STATE_URL=postgresql://pgconn_bot@db.example.org:5432/pgconn_state" in text
    assert "current_database()" not in text
    existing = setup_sql(state_database="postgres")  # exists in every cluster: granted, not created
    assert 'CREATE DATABASE "' not in existing and 'GRANT CREATE ON DATABASE "postgres"' in existing
    for bad in ("template1", "template0", "pg_state", "State", "x; DROP"):
        with pytest.raises(ValueError, match="state database"):
            setup_sql(state_database=bad)


def test_the_budget_sets_the_limit_and_reserved_connections() -> None:
    text = setup_sql(budget=Budget(targets=3, pool=4, state_pool=4, replicas=2))
    assert "CONNECTION LIMIT 46;" in text and "reserved_connections = 10 " in text
    assert "2 replicas open: per target (here 3)" in text
    assert all(len(line) <= 110 for line in text.splitlines())


def test_options_out_of_range_are_refused(tmp_path: Path) -> None:
    done = run_setup_sql(tmp_path, "--targets", "0")
    assert done.returncode == 2 and done.stdout == "" and "--targets and --replicas" in done.stderr


def test_an_unreachable_configured_server_does_not_stop_it(tmp_path: Path) -> None:
    done = run_setup_sql(tmp_path, PGCONN_DATABASE_URL="postgresql://pgct_nobody@127.0.0.1:1/postgres")
    assert done.returncode == 0 and done.stdout == setup_sql(), done.stderr


# --- setup-sql --drain: the function /pgconn drain calls, opt-in ----------------------------------


def test_without_drain_nothing_of_it_is_printed() -> None:
    assert setup_sql(drain=()) == setup_sql()
    assert "pgconn_drain" not in setup_sql() and "ALLOW_CONNECTIONS" not in setup_sql()


def test_drain_adds_the_function_the_list_and_the_grants() -> None:
    text = setup_sql("ops_bot", drain=["app", "reports"])
    assert text.startswith(setup_sql("ops_bot").split("-- Then, with your server's address")[0])  # added, not changed
    section = text.split("-- Draining (/pgconn drain)", 1)[1].split("-- (end of draining)", 1)[0]
    listed = "ARRAY['app', 'reports']::pg_catalog.name[]"
    for expected in (
        "CREATE SCHEMA pgconn_drain;",
        "REVOKE CREATE ON SCHEMA pgconn_drain FROM PUBLIC;",
        "CREATE FUNCTION pgconn_drain.set_allow_connections(db name, allow boolean) RETURNS void\n"
        "    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp\n",
        f"db <> ALL ({listed}) THEN\n        RAISE EXCEPTION",
        "EXECUTE pg_catalog.format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS %s', db,",
        "CASE WHEN allow THEN 'true' ELSE 'false' END);",  # never format's t/f
        f"CREATE FUNCTION pgconn_drain.drainable() RETURNS name[] LANGUAGE sql STABLE\n    AS $pgconn$ SELECT {listed}",
        "REVOKE ALL ON FUNCTION pgconn_drain.set_allow_connections(name, boolean) FROM PUBLIC;",
        "REVOKE ALL ON FUNCTION pgconn_drain.drainable() FROM PUBLIC;",
        'GRANT USAGE ON SCHEMA pgconn_drain TO "ops_bot";',
        'GRANT EXECUTE ON FUNCTION pgconn_drain.set_allow_connections(name, boolean) TO "ops_bot";',
        'GRANT EXECUTE ON FUNCTION pgconn_drain.drainable() TO "ops_bot";',
    ):
        assert expected in section, expected
    assert "in each of them" in section  # several databases on one server: the function in each
    assert "GRANT CREATE ON SCHEMA pgconn_drain" not in text and "GRANT ALL" not in text
    assert all(len(line) <= 110 for line in text.splitlines())


def test_the_function_name_is_the_one_the_bot_calls() -> None:
    from bot.db.sql import targets

    text = setup_sql(drain=["app"])
    assert f"GRANT EXECUTE ON FUNCTION {targets.DRAIN_FUNCTION} TO" in text
    assert "pgconn_drain.drainable()" in targets.DRAINABLE and "set_allow_connections(" in targets.SET_ALLOW_CONNECTIONS


@pytest.mark.parametrize(
    ("database", "why"),
    [
        ("template0", "template"),
        ("template1", "template"),
        ("pg_x", "reserved"),
        ("App", "lower-case letters"),
        ("x; DROP", "lower-case letters"),
        ("a'b", "lower-case letters"),
        ("", "lower-case letters"),
        ("a" * 64, "lower-case letters"),
        ("postgres", "state"),  # without --state-database the SQL puts the state there
    ],
)
def test_drain_refuses_templates_bad_names_and_the_state_database(database: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        setup_sql(drain=["app", database])
    assert str(refused.value).startswith("drain database")


def test_drain_refuses_the_state_database_it_was_given() -> None:
    with pytest.raises(ValueError, match="the bot's own state must never be drained"):
        setup_sql(state_database="pgconn_state", drain=["app", "pgconn_state"])
    assert "ARRAY['postgres']" in setup_sql(state_database="pgconn_state", drain=["postgres"])  # state elsewhere


def test_drain_databases_are_split_at_commas_and_kept_once() -> None:
    assert drain_databases(["app,reports", "app", " logs "]) == ["app", "reports", "logs"]
    assert drain_databases([]) == []
    with pytest.raises(ValueError, match="lower-case letters"):
        setup_sql(drain=drain_databases(["app,"]))  # an empty name is refused, not skipped


def test_the_drain_option_is_explained_in_the_help() -> None:
    parser = argparse.ArgumentParser(prog="pgconn-bot setup-sql")
    add_drain_argument(parser)
    shown = " ".join(parser.format_help().split())
    assert "--drain DB[,DB…]" in shown and " ".join(DRAIN_HELP.split()) in shown
    assert parser.parse_args(["--drain", "a,b", "--drain", "c"]).drain == ["a,b", "c"]
    assert parser.parse_args([]).drain == []


def setup_sql_args(*drain: str, state_database: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        role="pgconn_bot", state_database=state_database, targets=None, replicas=1, drain=list(drain)
    )


@pytest.fixture
def no_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in os.environ:
        if name.startswith(("PGCONN_", "SLACK_")):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_configuration")
def test_main_prints_the_drain_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert setup_sql_main(setup_sql_args("app,reports", "logs")) == 0
    out, err = capsys.readouterr()
    assert err == "" and out == setup_sql(drain=["app", "reports", "logs"])


@pytest.mark.usefixtures("no_configuration")
@pytest.mark.parametrize("drain", ["template1", "template0", "app,x; DROP", "postgres", "App"])
def test_main_refuses_with_one_line_and_nothing_on_stdout(capsys: pytest.CaptureFixture[str], drain: str) -> None:
    assert setup_sql_main(setup_sql_args(drain)) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("pgconn-bot setup-sql: drain database")


@pytest.mark.usefixtures("no_configuration")
def test_main_refuses_the_state_database_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert setup_sql_main(setup_sql_args("app", "pgconn_state", state_database="pgconn_state")) == 2
    out, err = capsys.readouterr()
    assert out == "" and "'pgconn_state' holds the bot's state (--state-database)" in err


def test_the_cli_shows_and_takes_drain(tmp_path: Path) -> None:
    shown = run_setup_sql(tmp_path, "--help")
    assert "--drain DB[,DB…]" in shown.stdout and "/pgconn drain" in " ".join(shown.stdout.split())
    done = run_setup_sql(tmp_path, "--drain", "app,reports", "--drain", "logs")
    assert done.returncode == 0 and done.stdout == setup_sql(drain=["app", "reports", "logs"]), done.stderr
    assert run_setup_sql(tmp_path).stdout == setup_sql()  # without it: unchanged


@pytest.mark.parametrize("drain", ["template1", "app,x; DROP", "postgres"])
def test_the_cli_refuses_drain_with_one_line(tmp_path: Path, drain: str) -> None:
    done = run_setup_sql(tmp_path, "--drain", drain)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
    assert lines[0].startswith("pgconn-bot setup-sql: drain database")
