"""One settings object for every command, read from the environment and overridden by CLI flags.

An invalid value stops the program at start with one line naming the setting (see
``load_settings``), never a traceback deep inside a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming it and saying what to do."""


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("rtmh"))


class Settings(BaseSettings):
    """Every RTMH setting. Environment variable names are fixed by DESIGN.md."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    postgres_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POSTGRES_URL", "postgres_url"),
        description="PostgreSQL URL; unset = the embedded server in RTMH_DATA_DIR",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="host:port[,host:port]; unset = the embedded broker",
    )
    topic_prefix: str = Field(
        default="rtmh.", validation_alias=AliasChoices("RTMH_TOPIC_PREFIX", "topic_prefix")
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        validation_alias=AliasChoices("RTMH_DATA_DIR", "data_dir"),
    )
    api_tokens: str = Field(
        default="",
        validation_alias=AliasChoices("RTMH_API_TOKENS", "RTMH_API_TOKEN", "api_tokens"),
        description="comma-separated bearer tokens for the API; empty = no auth on loopback",
    )
    group_id: str = Field(
        default="rtmh-worker", validation_alias=AliasChoices("RTMH_GROUP_ID", "group_id")
    )
    partitions: int = Field(
        default=4, ge=1, le=1024, validation_alias=AliasChoices("RTMH_PARTITIONS", "partitions")
    )
    batch_max_messages: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("RTMH_BATCH_MAX_MESSAGES", "batch_max_messages"),
    )
    batch_max_ms: int = Field(
        default=200,
        ge=1,
        le=60_000,
        validation_alias=AliasChoices("RTMH_BATCH_MAX_MS", "batch_max_ms"),
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        validation_alias=AliasChoices("RTMH_MAX_MESSAGE_BYTES", "max_message_bytes"),
    )
    retention_days: int = Field(
        default=7, ge=1, le=3650, validation_alias=AliasChoices("RTMH_RETENTION_DAYS")
    )
    window_size_s: int = Field(
        default=60, ge=1, le=86_400, validation_alias=AliasChoices("RTMH_WINDOW_SIZE_S")
    )
    window_slide_s: int = Field(
        default=10, ge=1, le=86_400, validation_alias=AliasChoices("RTMH_WINDOW_SLIDE_S")
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        validation_alias=AliasChoices("RTMH_METRICS_PORT", "metrics_port"),
        description="port for the worker's Prometheus /metrics; 0 = off",
    )
    session_timeout_ms: int = Field(
        default=6000,
        ge=1000,
        validation_alias=AliasChoices("RTMH_SESSION_TIMEOUT_MS", "session_timeout_ms"),
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("RTMH_LOG_LEVEL"))

    @field_validator("postgres_url")
    @classmethod
    def _check_postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("must start with postgres:// or postgresql://")
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise ValueError("has no host name")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
                raise ValueError(f"{server.strip()!r} is not host:port")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("use letters, digits, '.', '_' or '-' only")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("window_slide_s")
    @classmethod
    def _check_windows(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("window_size_s")
        if isinstance(size, int) and size % value:
            raise ValueError(f"RTMH_WINDOW_SIZE_S={size} must be a multiple of it")
        return value

    def topic(self, kind: str) -> str:
        return f"{self.topic_prefix}{kind}"

    @property
    def api_token_list(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.split(",") if t.strip()]


_ENV_NAMES = {
    name: next(
        (a for a in getattr(field.validation_alias, "choices", ()) if isinstance(a, str)),
        name,
    )
    for name, field in Settings.model_fields.items()
}


def describe_error(err: ValidationError) -> str:
    """One line naming the first bad setting by the name the user typed (its env variable)."""
    first = err.errors()[0]
    loc = first.get("loc") or ("settings",)
    field = str(loc[0])
    name = _ENV_NAMES.get(field, field)
    given = first.get("input")
    shown = "" if isinstance(given, dict) or given is None else f"={given!r}"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"invalid setting {name}{shown}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then CLI flags (non-None overrides) on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        raise ConfigError(describe_error(err)) from None
