"""Every setting the bot reads, validated at start.

A bad value must stop the process with one line naming the variable (``ConfigError``), not a
traceback: operators fix configuration from that line.
"""

from __future__ import annotations

import json
import re
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from bot import redact
from bot.errors import first_line
from bot.model.durations import DurationError, parse_duration
from bot.model.servers import DEFAULT_TARGET

DEFAULT_SLACK_API_URL = "https://slack.com/api/"

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_GROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line that names the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_dsn(variable: str, dsn: str) -> str:
    try:
        conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg raises ProgrammingError with a libpq message
        # libpq may quote part of the string (a badly encoded password): never echo it.
        why = redact.redact(first_line(exc), redact.secrets_in_dsn(dsn))
        raise ValueError(f"{variable}: not a valid PostgreSQL connection string ({why})") from None
    return dsn


CsvIds = Annotated[tuple[str, ...], NoDecode]


def _json_object(value: Any, example: str) -> dict[Any, Any]:
    """A setting that holds a JSON object (empty text: none), or one line saying what is wrong."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg}); expected {example}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object like {example}")
    return value


def _role_name_ok(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name.encode()) <= 63 and name.isprintable()


# What Slack's tokens look like: a bot token (OAuth & Permissions → Bot User OAuth Token; with
# token rotation it starts xoxe.xoxb-) and an app-level token (Basic Information → App-Level Tokens).
BOT_TOKEN_PREFIXES = ("xoxb-", "xoxe.xoxb-")
APP_TOKEN_PREFIXES = ("xapp-",)
_TOKEN_KINDS = {
    "xoxb-": "a bot token (it belongs in SLACK_BOT_TOKEN)",
    "xoxe.xoxb-": "a bot token (it belongs in SLACK_BOT_TOKEN)",
    "xapp-": "an app-level token (it belongs in SLACK_APP_TOKEN)",
    "xoxp-": "a user token (the bot needs its bot token, xoxb-…)",
    "xoxe-": "a refresh token (the bot needs its bot token, xoxb-…)",
}


def _check_token_shape(token: str, prefixes: tuple[str, ...], wanted: str) -> None:
    """One line that says what is wrong, never the token itself."""
    if token.startswith(prefixes) and not any(ch.isspace() for ch in token):
        return
    if any(ch.isspace() for ch in token.strip()) or token != token.strip():
        raise ValueError(f"contains spaces; paste {wanted} alone")
    seen = next((kind for prefix, kind in _TOKEN_KINDS.items() if token.startswith(prefix)), "not a Slack token")
    raise ValueError(f"needs {wanted}, starting {' or '.join(prefixes)}; this is {seen}")


class Settings(BaseSettings):
    """Environment (and ``.env``) configuration. Names match ``shared/interface.md``."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(DEFAULT_SLACK_API_URL, validation_alias="SLACK_API_URL")
    port: int = Field(3000, ge=1, le=65535, validation_alias="PORT")

    database_url: SecretStr = Field(SecretStr(""), validation_alias="PGCONN_DATABASE_URL")
    targets: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict, validation_alias="PGCONN_TARGETS")
    state_url: SecretStr | None = Field(None, validation_alias="PGCONN_STATE_URL")

    viewers: CsvIds = Field((), validation_alias="PGCONN_VIEWERS")
    requesters: CsvIds = Field((), validation_alias="PGCONN_REQUESTERS")
    approvers: CsvIds = Field((), validation_alias="PGCONN_APPROVERS")
    default_role: Literal["none", "viewer", "requester"] = Field("viewer", validation_alias="PGCONN_DEFAULT_ROLE")

    approval_channel: str | None = Field(None, validation_alias="PGCONN_APPROVAL_CHANNEL")
    audit_channel: str | None = Field(None, validation_alias="PGCONN_AUDIT_CHANNEL")
    alert_channel: str | None = Field(None, validation_alias="PGCONN_ALERT_CHANNEL")
    approval_ttl: int = Field(3600, ge=1, validation_alias="PGCONN_APPROVAL_TTL")
    required_approvals: int = Field(1, ge=1, le=10, validation_alias="PGCONN_REQUIRED_APPROVALS")
    allow_self_approval: bool = Field(False, validation_alias="PGCONN_ALLOW_SELF_APPROVAL")
    protected_roles: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="PGCONN_PROTECTED_ROLES")

    monitor_interval: float = Field(60, ge=0, validation_alias="PGCONN_MONITOR_INTERVAL")
    alert_utilization_warn: float = Field(0.7, gt=0, le=1, validation_alias="PGCONN_ALERT_UTILIZATION_WARN")
    alert_utilization_crit: float = Field(0.9, gt=0, le=1, validation_alias="PGCONN_ALERT_UTILIZATION_CRIT")
    alert_idle_in_tx_seconds: float = Field(300, ge=0, validation_alias="PGCONN_ALERT_IDLE_IN_TX_SECONDS")
    alert_long_query_seconds: float = Field(1800, ge=0, validation_alias="PGCONN_ALERT_LONG_QUERY_SECONDS")

    # Extensions beyond the interface (documented in the README).
    command_timeout: float = Field(2.0, gt=0, le=30, validation_alias="PGCONN_COMMAND_TIMEOUT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", validation_alias="PGCONN_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", validation_alias="PGCONN_LOG_FORMAT")
    pool_max_size: int = Field(4, ge=1, le=50, validation_alias="PGCONN_POOL_MAX_SIZE")
    state_pool_max_size: int = Field(4, ge=1, le=50, validation_alias="PGCONN_STATE_POOL_MAX_SIZE")
    max_pending_per_user: int = Field(5, ge=1, le=100, validation_alias="PGCONN_MAX_PENDING_PER_USER")
    show_queries: Literal["approvers", "everyone", "nobody"] = Field(
        "approvers", validation_alias="PGCONN_SHOW_QUERIES"
    )
    state_retention: timedelta = Field(timedelta(days=90), validation_alias="PGCONN_STATE_RETENTION")
    role_owners: Annotated[dict[str, dict[str, tuple[str, ...]]], NoDecode] = Field(
        default_factory=dict, validation_alias="PGCONN_ROLE_OWNERS"
    )
    self_service: Literal["off", "approve", "auto"] = Field("approve", validation_alias="PGCONN_SELF_SERVICE")
    digest_channel: str | None = Field(None, validation_alias="PGCONN_DIGEST_CHANNEL")
    digest_time: time = Field(time(8, 0), validation_alias="PGCONN_DIGEST_TIME")
    history_retention: timedelta = Field(timedelta(days=14), validation_alias="PGCONN_HISTORY_RETENTION")

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `.env.example` copied unchanged has `SLACK_SIGNING_SECRET=`: that is not a secret.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_token_shape(value.get_secret_value(), BOT_TOKEN_PREFIXES, "a bot token")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_token_shape(value.get_secret_value(), APP_TOKEN_PREFIXES, "an app-level token")
        return value

    @field_validator("slack_signing_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if secret.startswith(("xox", "xapp-")):
                raise ValueError(
                    "this is a token, not the signing secret (Basic Information → App Credentials → Signing Secret)"
                )
            if secret != secret.strip() or any(ch.isspace() for ch in secret):
                raise ValueError("contains spaces; paste the signing secret alone")
        return value

    @field_validator("viewers", "requesters", "approvers", "protected_roles", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("state_retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except DurationError as exc:
                raise ValueError(str(exc)) from None
        if isinstance(value, timedelta) and value < timedelta(days=1):
            raise ValueError("keep finished requests and alerts at least a day (for example 90d)")
        return value

    @field_validator("history_retention", mode="before")
    @classmethod
    def _history_retention(cls, value: Any) -> Any:
        """The same durations as PGCONN_STATE_RETENTION, and ``0``: keep no history at all."""
        if isinstance(value, str) and value.strip() == "0":
            return timedelta(0)
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except DurationError as exc:
                raise ValueError(f"{exc} (or 0 to keep none)") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("role_owners", mode="before")
    @classmethod
    def _owners(cls, value: Any) -> Any:
        """``{"U…": ["bob", …]}`` (every target) or ``{"U…": {"target": ["bob"], "*": […]}}``."""
        value = _json_object(value, '{"U0123ABCD": ["bob"]}')
        owners: dict[str, dict[str, tuple[str, ...]]] = {}
        for user, roles in value.items():
            if not isinstance(user, str) or not _USER_ID.match(user):
                raise ValueError(f"{user!r} is not a Slack user ID (U…/W…)")
            by_target = {"*": roles} if isinstance(roles, list) else roles
            if not isinstance(by_target, dict):
                raise ValueError(f"{user}: expected a list of role names, or an object of target: [role names]")
            owners[user] = {}
            for target, names in by_target.items():
                if target != "*" and not (isinstance(target, str) and _TARGET_NAME.match(target)):
                    raise ValueError(f"{user}: {target!r} is not a target name")
                if not isinstance(names, list) or not all(_role_name_ok(n) for n in names):
                    raise ValueError(f"{user}: role names must be a list of non-empty names without control characters")
                owners[user][target] = tuple(names)
        return owners

    @field_validator("default_role", "log_format", "show_queries", "self_service", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("viewers", "requesters", "approvers")
    @classmethod
    def _slack_principals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not (_USER_ID.match(item) or _GROUP_ID.match(item)):
                raise ValueError(
                    f"{item!r} is not a Slack user ID (U…/W…) or user-group ID (S…); use IDs, not display names"
                )
        return value

    @field_validator("digest_time", mode="before")
    @classmethod
    def _digest_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", value)
            if match is None:
                raise ValueError(f"{value!r} is not a time of day as HH:MM (UTC), for example 08:00")
            return time(int(match.group(1)), int(match.group(2)))
        return value

    @field_validator("approval_channel", "audit_channel", "alert_channel", "digest_channel", mode="before")
    @classmethod
    def _channel(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str) or not _CHANNEL_ID.match(value.strip()):
            raise ValueError(
                f"{value!r} is not a Slack channel ID (like C0123ABCD); use the channel's ID, not its name"
            )
        return value.strip()

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        value = _json_object(value, '{"name": "postgresql://…"}')
        for name, dsn in value.items():
            if not isinstance(name, str) or not _TARGET_NAME.match(name):
                raise ValueError(f"target name {name!r} must be letters, digits, '_', '-' or '.'")
            if name == DEFAULT_TARGET:
                raise ValueError(f"{DEFAULT_TARGET!r} is reserved for PGCONN_DATABASE_URL")
            if not isinstance(dsn, str) or not dsn.strip():
                raise ValueError(f"target {name!r} needs a connection string")
            _check_dsn(f"target {name!r}", dsn)
        return value

    @field_validator("database_url", "state_url", mode="before")
    @classmethod
    def _dsn(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            _check_dsn("value", value)
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> Settings:
        if self.alert_utilization_warn >= self.alert_utilization_crit:
            raise ValueError(
                "PGCONN_ALERT_UTILIZATION_WARN must be below PGCONN_ALERT_UTILIZATION_CRIT "
                f"({self.alert_utilization_warn} >= {self.alert_utilization_crit})"
            )
        return self

    # --- derived views -------------------------------------------------------------------------

    def target_dsns(self) -> dict[str, str]:
        """Every monitored target by name; ``default`` is PGCONN_DATABASE_URL (empty = libpq defaults)."""
        dsns = {DEFAULT_TARGET: self.database_url.get_secret_value()}
        dsns.update({name: dsn.get_secret_value() for name, dsn in self.targets.items()})
        return dsns

    def state_dsn(self) -> str:
        if self.state_url is not None and self.state_url.get_secret_value().strip():
            return self.state_url.get_secret_value()
        return self.database_url.get_secret_value()

    def state_variable(self) -> str:
        """The variable the state database comes from, for messages that must name it."""
        if self.state_url is not None and self.state_url.get_secret_value().strip():
            return "PGCONN_STATE_URL"
        return "PGCONN_DATABASE_URL (PGCONN_STATE_URL is not set)"

    def register_secrets(self) -> None:
        """Tokens, the signing secret and connection-string passwords: masked in every log and error."""
        for secret in (self.slack_bot_token, self.slack_signing_secret, self.slack_app_token):
            if secret is not None:
                redact.register(secret.get_secret_value())
        redact.register_dsns([*self.target_dsns().values(), self.state_dsn()])

    def bot_token(self) -> str | None:
        return self.slack_bot_token.get_secret_value() if self.slack_bot_token else None


_ENV_NAMES = {name: field.validation_alias for name, field in Settings.model_fields.items()}


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; raise ConfigError with one line per bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            location = error["loc"][0] if error["loc"] else ""
            variable = _ENV_NAMES.get(str(location), str(location)) or "configuration"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{variable}: {message}" if variable else message)
        raise ConfigError("; ".join(lines)) from None
    except SettingsError as exc:
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        raise ConfigError(
            f"{_ENV_NAMES.get(field, field) or 'configuration'}: cannot be parsed ({redact.redact(first_line(exc))})"
        ) from None
    settings.register_secrets()
    return settings


# What each Slack mode needs set (their shapes are checked when the settings are read).
MODE_NEEDS: dict[str, tuple[str, ...]] = {
    "serve": ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"),
    "socket": ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"),
}


def missing_for(settings: Settings, mode: str) -> list[str]:
    """The variables ``mode`` needs that are unset (blank counts as unset). ``serve``, ``socket``
    and ``check`` all ask this, so ``check`` says ready exactly when the mode will start."""
    missing = []
    for variable in MODE_NEEDS.get(mode, ()):
        field = next(name for name, alias in _ENV_NAMES.items() if alias == variable)
        value = getattr(settings, field)
        if value is None or (isinstance(value, SecretStr) and not value.get_secret_value().strip()):
            missing.append(variable)
    return missing


def require(settings: Settings, mode: str) -> None:
    """Fail with one line when ``mode`` needs variables that are unset."""
    if missing := missing_for(settings, mode):
        raise ConfigError(f"{', '.join(missing)} must be set for `pgconn-bot {mode}` (see `pgconn-bot {mode} --help`)")
