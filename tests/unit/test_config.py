"""Bad configuration fails with one line naming the variable."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings, missing_for, require


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PGCONN_", "SLACK_")) or name == "PORT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


def test_defaults_match_the_interface() -> None:
    s = load_settings()
    assert s.port == 3000 and s.slack_api_url == "https://slack.com/api/"
    assert s.target_dsns() == {"default": ""} and s.state_dsn() == ""
    assert (s.approval_ttl, s.required_approvals, s.allow_self_approval) == (3600, 1, False)
    assert (s.monitor_interval, s.alert_utilization_warn, s.alert_utilization_crit) == (60, 0.7, 0.9)
    assert (s.alert_idle_in_tx_seconds, s.alert_long_query_seconds) == (300, 1800)
    assert s.default_role == "viewer"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONN_TARGETS", '{"reporting": "postgresql://u@db2/x"}')
    monkeypatch.setenv("PGCONN_APPROVERS", "U0AAA, S0BBB")
    monkeypatch.setenv("PGCONN_PROTECTED_ROLES", "replicator,backup")
    monkeypatch.setenv("PGCONN_AUDIT_CHANNEL", "C0AUDIT1")
    monkeypatch.setenv("PGCONN_DATABASE_URL", "postgresql://u@db1/x")
    s = load_settings()
    assert s.target_dsns() == {"default": "postgresql://u@db1/x", "reporting": "postgresql://u@db2/x"}
    assert s.approvers == ("U0AAA", "S0BBB") and s.protected_roles == ("replicator", "backup")
    assert s.state_dsn() == "postgresql://u@db1/x"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("PGCONN_TARGETS", "{not json", "PGCONN_TARGETS: not valid JSON"),
        ("PGCONN_TARGETS", '["a"]', "PGCONN_TARGETS: expected a JSON object"),
        ("PGCONN_TARGETS", '{"default": "postgresql://x"}', "PGCONN_TARGETS: 'default' is reserved"),
        ("PGCONN_TARGETS", '{"a b": "postgresql://x"}', "PGCONN_TARGETS: target name 'a b'"),
        ("PGCONN_TARGETS", '{"b": "host=x port"}', "PGCONN_TARGETS: target 'b': not a valid PostgreSQL"),
        ("PGCONN_AUDIT_CHANNEL", "#ops-audit", "PGCONN_AUDIT_CHANNEL: '#ops-audit' is not a Slack channel ID"),
        ("PGCONN_ALERT_CHANNEL", "c0123abc", "PGCONN_ALERT_CHANNEL"),
        ("PGCONN_APPROVERS", "U0AAA,@alice", "PGCONN_APPROVERS: '@alice' is not a Slack user ID"),
        ("PGCONN_DEFAULT_ROLE", "admin", "PGCONN_DEFAULT_ROLE"),
        ("PGCONN_APPROVAL_TTL", "soon", "PGCONN_APPROVAL_TTL"),
        ("PGCONN_REQUIRED_APPROVALS", "0", "PGCONN_REQUIRED_APPROVALS"),
        ("PORT", "70000", "PORT"),
        ("SLACK_API_URL", "slack.example", "SLACK_API_URL"),
        ("PGCONN_ALERT_UTILIZATION_WARN", "0.95", "WARN must be below"),
        ("PGCONN_STATE_URL", "postgresql://x/y?bogus=1", "PGCONN_STATE_URL"),
        ("SLACK_BOT_TOKEN", "xapp-1-A0-1-abc", "SLACK_BOT_TOKEN: needs a bot token, starting xoxb-"),
        ("SLACK_BOT_TOKEN", "xoxp-123-456", "this is a user token"),
        ("SLACK_BOT_TOKEN", "hunter2", "SLACK_BOT_TOKEN: needs a bot token, starting xoxb- or xoxe.xoxb-; this is not"),
        ("SLACK_BOT_TOKEN", "xoxb-1 xoxb-2", "SLACK_BOT_TOKEN: contains spaces"),
        ("SLACK_APP_TOKEN", "xoxb-123-456", "SLACK_APP_TOKEN: needs an app-level token, starting xapp-; this is a bot"),
        ("SLACK_SIGNING_SECRET", "xoxb-123", "SLACK_SIGNING_SECRET: this is a token, not the signing secret"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message and "Traceback" not in message


def test_serve_requires_slack_settings() -> None:
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET must be set"):
        require(load_settings(), "serve")


def test_a_token_never_appears_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-secret-123456")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "secret-123456" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "serve", "socket"),
    [
        ({}, ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"], ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"]),
        # `.env.example` copied unchanged: blank values are unset, not ready
        (
            {"SLACK_BOT_TOKEN": "", "SLACK_SIGNING_SECRET": " ", "SLACK_APP_TOKEN": ""},
            ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"],
            ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"],
        ),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": ""}, ["SLACK_SIGNING_SECRET"], ["SLACK_APP_TOKEN"]),
        ({"SLACK_BOT_TOKEN": "xoxe.xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, ["SLACK_SIGNING_SECRET"], []),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "abc123"}, [], ["SLACK_APP_TOKEN"]),
    ],
)
def test_what_each_mode_still_needs(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], serve: list[str], socket: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (missing_for(settings, "serve"), missing_for(settings, "socket")) == (serve, socket)


@pytest.mark.parametrize(
    ("env", "ready"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "", "SLACK_APP_TOKEN": ""}, None),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "abc"}, "serve (HTTP)"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, "socket (Socket Mode)"),
    ],
)
def test_check_says_ready_exactly_when_the_mode_would_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], ready: str | None
) -> None:
    import io

    from bot.doctor import Report, _check_modes

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    _check_modes(load_settings(), Report(out))
    said = out.getvalue()
    if ready is None:
        assert "ready" not in said and "✗ SLACK_BOT_TOKEN is set, but neither" in said, said
    else:
        assert f"✓ Slack modes ready: {ready}; console always works" in said, said


@pytest.mark.parametrize(
    ("mode", "variables"),
    [
        ("serve", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "PGCONN_DATABASE_URL", "PGCONN_STATE_URL"]),
        ("socket", ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "PGCONN_DATABASE_URL"]),
        ("console", ["PGCONN_DATABASE_URL", "PGCONN_APPROVERS"]),
        ("check", ["PGCONN_STATE_URL", "SLACK_APP_TOKEN"]),
        ("drop-state", ["PGCONN_STATE_URL", "DROP SCHEMA pgconn CASCADE"]),
    ],
)
def test_each_mode_help_names_what_it_needs(
    capsys: pytest.CaptureFixture[str], mode: str, variables: list[str]
) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit) as done:
        main([mode, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert all(variable in shown for variable in variables), shown
    assert mode in ("check", "drop-state") or "pgconn-bot check" in shown


def test_digest_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import time

    monkeypatch.setenv("PGCONN_DIGEST_CHANNEL", "C0DIGEST")
    monkeypatch.setenv("PGCONN_DIGEST_TIME", "7:30")
    s = load_settings()
    assert (s.digest_channel, s.digest_time) == ("C0DIGEST", time(7, 30))
    for bad in ("25:00", "8", "eight", "08:60"):
        monkeypatch.setenv("PGCONN_DIGEST_TIME", bad)
        with pytest.raises(ConfigError, match="PGCONN_DIGEST_TIME"):
            load_settings()
    monkeypatch.setenv("PGCONN_DIGEST_TIME", "08:00")
    monkeypatch.setenv("PGCONN_DIGEST_CHANNEL", "#digest")
    with pytest.raises(ConfigError, match="PGCONN_DIGEST_CHANNEL"):
        load_settings()
