"""One settings object for every command, read from the environment and overridden by CLI flags.

An invalid value stops the program at start with one line naming the setting (see
``load_settings``), never a traceback deep inside a worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
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
    log_topics: str = Field(
        default="",
        validation_alias=AliasChoices("RTMH_LOG_TOPICS", "log_topics"),
        description="comma-separated topics carrying logs; empty = <prefix>logs",
    )
    metric_topics: str = Field(
        default="",
        validation_alias=AliasChoices("RTMH_METRIC_TOPICS", "metric_topics"),
        description="comma-separated topics carrying metrics; empty = <prefix>metrics",
    )
    event_topics: str = Field(
        default="",
        validation_alias=AliasChoices("RTMH_EVENT_TOPICS", "event_topics"),
        description="comma-separated topics carrying events; empty = <prefix>events",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        validation_alias=AliasChoices("RTMH_DATA_DIR", "data_dir"),
    )
    # --- the API (rtmh api; also a child of rtmh up)
    api_host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("RTMH_API_HOST", "api_host"),
        description="address `rtmh api` listens on",
    )
    api_port: int = Field(
        default=8080,
        ge=0,
        le=65_535,
        validation_alias=AliasChoices("RTMH_API_PORT", "api_port"),
        description="port `rtmh api` listens on (0 = any free port)",
    )
    api_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        validation_alias=AliasChoices("RTMH_API_MAX_BODY_BYTES", "api_max_body_bytes"),
        description="larger request bodies get 413",
    )
    api_auth_failures_per_minute: int = Field(
        default=20,
        ge=1,
        le=100_000,
        validation_alias=AliasChoices(
            "RTMH_API_AUTH_FAILURES_PER_MINUTE", "api_auth_failures_per_minute"
        ),
        description="failed token checks one client address may make per minute before 429",
    )
    api_stream_keepalive_s: float = Field(
        default=15.0,
        ge=0.5,
        le=300.0,
        validation_alias=AliasChoices("RTMH_API_STREAM_KEEPALIVE_S", "api_stream_keepalive_s"),
        description="seconds between keepalive comments on an idle /api/v1/stream (lower it "
        "when a proxy closes idle connections sooner)",
    )
    allowed_targets: str = Field(
        default="",
        validation_alias=AliasChoices("RTMH_ALLOWED_TARGETS", "allowed_targets"),
        description="comma-separated networks (CIDR) or host names that webhook, Slack, "
        "Alertmanager and PagerDuty channels may reach although they are private or loopback; "
        "link-local "
        "and cloud metadata addresses are refused whatever this says",
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
        description="records a batch holds at most (an OTLP message counts its records)",
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
    window_max_new_keys_per_batch: int = Field(
        default=1_000,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices(
            "RTMH_WINDOW_MAX_NEW_KEYS_PER_BATCH", "window_max_new_keys_per_batch"
        ),
        description="window keys (services) never seen before that one batch may open; the "
        "rest are windowed under __other__ (docs/cardinality.md)",
    )
    window_max_keys_per_minute: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        validation_alias=AliasChoices(
            "RTMH_WINDOW_MAX_KEYS_PER_MINUTE", "window_max_keys_per_minute"
        ),
        description="distinct window keys (services) one worker windows in a minute; past it, "
        "new ones are windowed under __other__ (docs/cardinality.md)",
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
    embedded_broker_max_batches: int = Field(
        default=1_000,
        ge=10,
        le=15_000,
        validation_alias=AliasChoices(
            "RTMH_EMBEDDED_BROKER_MAX_BATCHES", "embedded_broker_max_batches"
        ),
        description="`rtmh up`: producer batches one partition of the embedded broker holds "
        "before its topics are rolled (rtmh.embedded.log_roll); tansu slows past ~15,000",
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("RTMH_LOG_LEVEL"))
    # --- the notifier (rtmh notifier); rtmh.notify.notifier.NotifierOptions.from_settings
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        validation_alias=AliasChoices("RTMH_PUBLIC_URL", "public_url"),
        description="the dashboard's public URL; notifications link {public_url}/incidents/{id}",
    )
    notify_concurrency: int = Field(
        default=64,
        ge=1,
        validation_alias=AliasChoices("RTMH_NOTIFY_CONCURRENCY", "notify_concurrency"),
        description="deliveries in flight at once per notifier",
    )
    notify_batch_size: int = Field(
        default=100,
        ge=1,
        validation_alias=AliasChoices("RTMH_NOTIFY_BATCH_SIZE", "notify_batch_size"),
        description="rows one claim takes at most",
    )
    notify_backoff_base_s: float = Field(
        default=1.0,
        gt=0,
        validation_alias=AliasChoices("RTMH_NOTIFY_BACKOFF_BASE_S", "notify_backoff_base_s"),
        description="retry n waits base * 2**(n-1) s (capped, with jitter)",
    )
    notify_backoff_cap_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias=AliasChoices("RTMH_NOTIFY_BACKOFF_CAP_S", "notify_backoff_cap_s"),
    )
    notify_lease_margin_s: float = Field(
        default=5.0,
        ge=0,
        validation_alias=AliasChoices("RTMH_NOTIFY_LEASE_MARGIN_S", "notify_lease_margin_s"),
        description="a claim's lease = the channel's longest attempt + this",
    )
    notify_poll_cap_s: float = Field(
        default=1.0,
        gt=0,
        validation_alias=AliasChoices("RTMH_NOTIFY_POLL_CAP_S", "notify_poll_cap_s"),
        description="longest sleep between claims without a NOTIFY",
    )
    notify_stop_timeout_s: float = Field(
        default=30.0,
        ge=0,
        validation_alias=AliasChoices("RTMH_NOTIFY_STOP_TIMEOUT_S", "notify_stop_timeout_s"),
        description="on stop, how long in-flight deliveries may still take",
    )

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

    @field_validator("log_topics", "metric_topics", "event_topics")
    @classmethod
    def _check_topics(cls, value: str) -> str:
        names = _topic_list(value)
        for name in names:
            # Kafka's own rule for topic names (legal characters, at most 249)
            if len(name) > 249 or not all(
                c.isascii() and (c.isalnum() or c in "._-") for c in name
            ):
                raise ValueError(f"{name!r} is not a Kafka topic name (letters, digits, . _ -)")
        return ",".join(names)

    @model_validator(mode="after")
    def _check_topic_kinds(self) -> Settings:
        seen: dict[str, str] = {}
        for kind in ("logs", "metrics", "events"):
            for topic in self.topics_for(kind):
                if topic in seen and seen[topic] != kind:
                    raise ValueError(
                        f"topic {topic!r} is mapped to both {seen[topic]} and {kind}; "
                        "give each topic one kind (RTMH_LOG_TOPICS, RTMH_METRIC_TOPICS, "
                        "RTMH_EVENT_TOPICS)"
                    )
                seen[topic] = kind
        return self

    @field_validator("allowed_targets")
    @classmethod
    def _check_allowed_targets(cls, value: str) -> str:
        from rtmh.notify.targets import TargetPolicy  # owns the entry syntax

        try:
            TargetPolicy.parse(_topic_list(value))
        except ValueError as err:
            raise ValueError(str(err).removeprefix("RTMH_ALLOWED_TARGETS: ")) from None
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("window_slide_s")
    @classmethod
    def _check_windows(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("window_size_s")
        if isinstance(size, int) and size % value:
            raise ValueError(f"RTMH_WINDOW_SIZE_S={size} must be a multiple of it")
        return value

    def topic(self, kind: str) -> str:
        """The RTMH topic of a kind: ``<prefix><kind>``, e.g. rtmh.logs."""
        return f"{self.topic_prefix}{kind}"

    def topics_for(self, kind: str) -> list[str]:
        """Every topic carrying a kind: the RTMH topic by default, or the user's list (which
        may name the Collector's otlp_logs beside rtmh.logs)."""
        given = {
            "logs": self.log_topics,
            "metrics": self.metric_topics,
            "events": self.event_topics,
        }[kind]
        return _topic_list(given) or [self.topic(kind)]

    def topic_kinds(self) -> dict[str, str]:
        """topic -> the kind it carries, for every topic the worker reads."""
        return {t: kind for kind in ("logs", "metrics", "events") for t in self.topics_for(kind)}

    @property
    def allowed_target_list(self) -> list[str]:
        return _topic_list(self.allowed_targets)

    def to_env(self) -> dict[str, str]:
        """The environment variables that make a child process (``rtmh worker`` under ``up``, a
        benchmarked worker) read exactly these settings: every setting, under the name
        pydantic-settings reads it by. Callers merge it over their base environment.

        Secrets are included in clear (the child needs them): never log the result. A setting
        that is None (unset) is left out rather than written as "", which would not read back
        as None for every type; so the base environment must not set it either (either it is
        the one these settings were read from, or it holds no RTMH_* keys)."""
        dumped = self.model_dump(mode="json")
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = _env_value(getattr(self, name), dumped[name])
            if value is not None:
                env[_env_name(type(self), name, field)] = value
        return env


def _topic_list(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _env_name(model: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """The variable pydantic-settings reads a field from: its first alias, else its name."""
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias or field.alias]
    for choice in choices:
        if isinstance(choice, str):
            return choice
    return (model.model_config.get("env_prefix", "") + name).upper()


def _env_value(value: Any, dumped: Any) -> str | None:
    """One setting as the text its environment variable holds; ``dumped`` is its JSON form."""
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)  # repr of a float reads back as the same float, inf included
    if isinstance(dumped, str):
        return dumped  # str, Path, enums, dates: their JSON form is what pydantic parses
    # lists, dicts and models: pydantic-settings parses complex values from JSON
    return json.dumps(dumped)


#: setting -> its environment variable, e.g. batch_max_ms -> RTMH_BATCH_MAX_MS
ENV_NAMES = {
    name: _env_name(Settings, name, field) for name, field in Settings.model_fields.items()
}


def describe_error(err: ValidationError) -> str:
    """One line naming the first bad setting by the name the user typed (its env variable)."""
    first = err.errors()[0]
    loc = first.get("loc")
    if not loc:  # a check across settings: its message names them
        return "invalid settings: " + str(first.get("msg", "invalid")).removeprefix("Value error, ")
    field = str(loc[0])
    name = ENV_NAMES.get(field, field)
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
