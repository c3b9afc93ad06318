"""Request and response bodies shared by the routes (the OpenAPI document is built from them).

Request models forbid unknown fields, so a typo such as ``threshhold`` is a 422 naming it rather
than a silently ignored key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

Severity = Literal["low", "medium", "high", "critical"]
IncidentStatus = Literal["open", "investigating", "resolved", "closed"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageOf(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


class Incident(BaseModel):
    id: str
    title: str
    description: str | None
    severity: Severity
    status: IncidentStatus
    source: str
    rule_id: int | None
    rule_name: str | None
    window_key: str | None = Field(description="the service (or __all__) the rule fired on")
    last_value: float | None
    peak_value: float | None
    threshold: float | None
    trigger_count: int
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    closed_at: datetime | None
    assignee: str | None
    created_at: datetime
    updated_at: datetime


class TimelineEntry(BaseModel):
    id: int
    event_type: str
    from_status: str | None
    to_status: str | None
    value: float | None
    details: dict[str, Any]
    actor: str
    created_at: datetime


class AttemptResult(BaseModel):
    attempt: int
    outcome: Literal["sent", "failed", "dead", "interrupted"]
    http_status: int | None
    error: str | None
    at: datetime


class IncidentNotification(BaseModel):
    id: int
    channel: str
    event: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    last_error: str | None
    http_status: int | None
    suppressed_by: int | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempt_results: list[AttemptResult]


class IncidentDetail(Incident):
    why: dict[str, Any] | None = Field(description="the trigger: value, threshold, window")
    recent_errors: list[dict[str, Any]]
    recent_changes: list[dict[str, Any]] = Field(description="deploys and changes before it")
    metadata: dict[str, Any]
    timeline: list[TimelineEntry]
    notifications: list[IncidentNotification]


class ActionBody(Strict):
    message: str | None = Field(
        default=None, max_length=4000, description="a comment for the timeline"
    )


class NoteBody(Strict):
    message: str = Field(min_length=1, max_length=4000)


class AssignBody(Strict):
    assignee: str | None = Field(
        max_length=200, description="who takes it; null or empty to unassign"
    )


Aggregation = Literal["value", "avg", "min", "max", "sum", "count", "p50", "p95", "p99"]
Condition = Literal[">", ">=", "<", "<=", "==", "!="]


class RuleIn(Strict):
    """A rule as sent (documentation of the body: the server checks it with the engine's own
    validate_rule, whose 422 names the field)."""

    name: str
    metric_type: str = Field(
        description="log_count, error_count, error_rate, event_count or a metric name"
    )
    condition: Condition
    threshold: float
    aggregation: Aggregation = "value"
    recovery_threshold: float | None = None
    for_seconds: int = Field(default=0, ge=0)
    window_key_pattern: str = Field(default="*", description="shell glob on the service")
    min_count: int = Field(default=20, ge=0)
    no_data_seconds: int | None = Field(default=None, ge=1)
    resolve_after_seconds: int = Field(default=30, ge=0)
    severity: Severity = "medium"
    channels: list[str] = Field(default_factory=list)
    enabled: bool = True
    repeat_interval_seconds: int = Field(default=3600, ge=1)
    source: str = "threshold_monitor"
    description: str | None = None
    runbook_url: str | None = None


class RuleOut(BaseModel):
    id: int
    name: str
    metric_type: str
    condition: str
    threshold: float
    aggregation: str
    recovery_threshold: float | None
    for_seconds: int
    window_key_pattern: str
    min_count: int
    no_data_seconds: int | None
    resolve_after_seconds: int
    severity: str
    channels: list[str]
    enabled: bool
    repeat_interval_seconds: int
    source: str
    description: str | None
    runbook_url: str | None
    managed_by: str | None = Field(
        default=None, description="the config file that owns it (rtmh config apply), if any"
    )
    created_at: datetime
    updated_at: datetime


class SilenceMatchers(Strict):
    rule: str | None = Field(default=None, min_length=1, description="glob on the rule name")
    service: str | None = Field(default=None, min_length=1, description="glob on the service")
    severity: str | None = Field(default=None, min_length=1, description="glob on the severity")


class SilenceIn(Strict):
    matchers: SilenceMatchers
    starts_at: datetime | None = Field(default=None, description="default: now")
    ends_at: datetime | None = Field(default=None, description="give ends_at or duration")
    duration_seconds: int | None = Field(default=None, ge=1, le=366 * 86400)
    comment: str = Field(default="", max_length=4000)


class SilenceOut(BaseModel):
    id: int
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    state: Literal["pending", "active", "expired"]


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=63)
    scope: Literal["read", "write", "admin"]


class TokenOut(BaseModel):
    id: int
    name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once: store it now")


class SessionIn(Strict):
    token: str = Field(min_length=1, max_length=200, description="an API token to sign in with")


class SessionOut(BaseModel):
    name: str = Field(description="the token the caller acts as (the actor on the timeline)")
    scope: Literal["read", "write", "admin"]
    via: Literal["bearer", "cookie"]


class BacktestIn(Strict):
    rule: int | str | dict[str, Any] = Field(
        description="a saved rule's id or name, or a whole rule definition (not saved)"
    )
    start: datetime | None = Field(default=None, description="default: end - 1 hour")
    end: datetime | None = Field(default=None, description="default: now")


class MetricPoint(BaseModel):
    """One window of a series (metrics_agg without its sketch)."""

    window_start: datetime
    window_end: datetime
    value: float | None = Field(
        description="rate for error_rate, mean for a metric, count for the counters"
    )
    count: int
    sum: float
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class MetricSeries(BaseModel):
    window_key: str
    metric_type: str
    since: datetime = Field(description="the range searched: windows starting at or after")
    until: datetime = Field(description="... and before")
    points: list[MetricPoint] = Field(description="oldest first")
    truncated: bool = Field(
        description="the range holds more windows than limit: narrow it to see the rest"
    )


class ServiceSeries(BaseModel):
    window_key: str
    logs_per_s: list[tuple[datetime, float | None]] = Field(
        description="[window_start, log lines per second], oldest first"
    )
    error_rate: list[tuple[datetime, float | None]]
    latency_p95: list[tuple[datetime, float | None]] = Field(
        description="[window_start, p95 of the latency metric]"
    )


class ServicesOverview(BaseModel):
    since: datetime
    until: datetime
    latency_metric: str
    services: list[ServiceSeries] = Field(description="by window key")


class LatestMetric(BaseModel):
    value: float | None
    count: int
    window_start: datetime
    window_end: datetime


class WindowKeyLatest(BaseModel):
    window_key: str = Field(description="a service, or __all__ / __other__")
    latest_window_start: datetime
    metrics: dict[str, LatestMetric] = Field(
        description="by metric type: the newest window's value"
    )


class RawEvent(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    generation: int
    record_index: int
    service: str
    host: str | None
    level: str | None
    event_time: datetime
    created_at: datetime = Field(description="when it was stored")
    data: Any = Field(description="the record as received")
    flags: list[str]


class DeadLetterOut(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    generation: int
    record_index: int | None
    reason: str
    broker_time: datetime | None
    created_at: datetime
    size: int | None = Field(description="payload bytes")


class DeadLetterSummary(BaseModel):
    total: int
    last_hour: int
    newest_at: datetime | None


class NotificationLogEntry(BaseModel):
    id: int
    incident_id: str | None
    incident_title: str | None
    window_key: str | None
    rule_name: str | None
    channel: str
    event: str
    status: str
    attempts: int
    max_attempts: int
    http_status: int | None
    last_error: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeadLetterDetail(DeadLetterOut):
    key_base64: str | None = Field(description="the Kafka key's exact bytes")
    payload_base64: str | None = Field(description="the payload's exact bytes")
    preview: str | None = Field(
        description="the payload's first 4 KiB as UTF-8, undecodable bytes replaced"
    )
    preview_truncated: bool


ChannelType = Literal["webhook", "slack", "email", "pagerduty", "alertmanager"]


class ChannelIn(Strict):
    name: str = Field(min_length=1, max_length=63)
    type: ChannelType
    config: dict[str, Any] = Field(
        default_factory=dict, description="url, timeout_seconds, recipients, ... (docs/api.md)"
    )
    secrets: dict[str, Any] = Field(
        default_factory=dict, description="write-only: hmac_secret, routing_key, password, ..."
    )
    enabled: bool = True


class ChannelUpdate(Strict):
    type: ChannelType
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, Any] | None = Field(
        default=None,
        description="secrets to set (null value: remove it); those not named are kept",
    )
    enabled: bool = True


class ChannelOut(BaseModel):
    name: str
    type: str
    config: dict[str, Any]
    secrets: dict[str, Literal["set"]] = Field(description="which secrets are set, never values")
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ChannelTestOut(BaseModel):
    ok: bool
    http_status: int | None
    error: str | None
    response_excerpt: str
    retryable: bool
