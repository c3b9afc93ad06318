"""Typed inputs of rule evaluation: rules, window values and the incident state.

Role in the flow: the worker (and the API, before it stores a rule) turns ``alert_rules`` rows into
:class:`Rule` with :func:`validate_rule`; after each batch commit it turns the merged
``metrics_agg`` rows into :class:`WindowValue` and incident rows into :class:`IncidentState`, then
calls the pure functions of :mod:`rtmh.rules.evaluate` and :mod:`rtmh.rules.lifecycle`.
Nothing in this module does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Final, Literal, TypeAlias, cast

import msgspec

from rtmh.records import SEVERITIES, Severity
from rtmh.rules.condition import CONDITIONS, Condition, crosses

__all__ = [
    "AGGREGATIONS",
    "COUNT_METRIC_TYPES",
    "STATE_METADATA_FIELDS",
    "Aggregation",
    "IncidentState",
    "Rule",
    "RuleError",
    "StateStatus",
    "WindowValue",
    "validate_rule",
]

Aggregation: TypeAlias = Literal["value", "avg", "min", "max", "sum", "count", "p50", "p95", "p99"]
#: rtmh.records.IncidentStatus plus "pending": the condition holds but not yet for `for_seconds`.
#: A pending state has no incidents row (id is None); it is never written to incidents.status.
StateStatus: TypeAlias = Literal["pending", "open", "investigating", "resolved", "closed"]

AGGREGATIONS: Final[tuple[Aggregation, ...]] = (
    "value",
    "avg",
    "min",
    "max",
    "sum",
    "count",
    "p50",
    "p95",
    "p99",
)
#: metric types whose `value` is a plain count, not a ratio or a mean (DESIGN "Sliding windows");
#: min_count gating does not apply to them.
COUNT_METRIC_TYPES: Final[frozenset[str]] = frozenset({"log_count", "error_count", "event_count"})

# Same rule as the CHECK on notification_channels.name: a rule naming anything else could never
# be delivered, so it is refused at the door instead of failing in the notifier.
_CHANNEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_PG_INT_MAX: Final = 2_147_483_647


class RuleError(ValueError):
    """A rule definition is invalid; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One alert rule, mirroring an ``alert_rules`` row. Build it with :func:`validate_rule`."""

    #: alert_rules.id; 0 for a rule not stored yet (serial ids start at 1)
    id: int = 0
    name: str
    #: detector name, copied to incidents.source
    source: str = "threshold_monitor"
    metric_type: str
    aggregation: Aggregation = "value"
    condition: Condition
    threshold: float
    #: hysteresis: a live incident stays live while this is still crossed
    recovery_threshold: float | None = None
    for_seconds: int = 0
    window_key_pattern: str = "*"
    min_count: int = 20
    #: set: an absence rule, judged by evaluate_absence instead of on window values
    no_data_seconds: int | None = None
    resolve_after_seconds: int = 30
    severity: Severity = "medium"
    channels: tuple[str, ...] = ()
    enabled: bool = True
    repeat_interval_seconds: int = 3600
    description: str | None = None
    runbook_url: str | None = None


class WindowValue(msgspec.Struct, frozen=True, kw_only=True):
    """One merged ``metrics_agg`` row; times are epoch seconds, the window is [start, end)."""

    window_key: str
    metric_type: str
    window_start: float
    window_end: float
    #: the metric's natural aggregate: rate for error_rate, mean for metrics, count for counts
    value: float | None = None
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class IncidentState(msgspec.Struct, frozen=True, kw_only=True):
    """What evaluation needs to know about the incident of one (rule, window_key).

    Columns of ``incidents``: id, status, fingerprint, rule_id, window_key, first_seen, last_seen,
    peak_value, last_value, trigger_count, resolved_at, closed_at (times as epoch seconds). The
    others (:data:`STATE_METADATA_FIELDS`) are evaluation bookkeeping without a column.
    """

    #: incidents.id (uuid text); None until the row is inserted, always None while pending
    id: str | None
    status: StateStatus
    fingerprint: str
    rule_id: int
    window_key: str
    first_seen: float
    last_seen: float
    #: start of the current run of condition-true verdicts (for_seconds counts from here)
    condition_true_since: float | None = None
    #: first clear verdict of a live incident (resolve_after_seconds counts from here)
    clear_since: float | None = None
    #: last open/update/repeat/resolve notification (repeat_interval_seconds counts from here)
    last_notified_at: float | None = None
    peak_value: float | None = None
    last_value: float | None = None
    #: times the condition triggered: 1 at open, +1 per reopen or re-trigger while clearing
    trigger_count: int = 0
    resolved_at: float | None = None
    closed_at: float | None = None
    #: the peak reported by the last open/update notification (drives 'update' notifications)
    notified_peak: float | None = None
    #: the rule's severity at the last notification: a change is news for the responder (None:
    #: not known, e.g. an incident stored before this was recorded)
    notified_severity: Severity | None = None
    #: notifications emitted so far; the next one gets seq + 1 (part of the idempotency key)
    notification_seq: int = 0


#: IncidentState fields that are not columns of incidents: the DB layer keeps them in
#: incidents.metadata (same names, epoch seconds / numbers) and reads them back from there.
STATE_METADATA_FIELDS: Final[tuple[str, ...]] = (
    "condition_true_since",
    "clear_since",
    "last_notified_at",
    "notified_peak",
    "notified_severity",
    "notification_seq",
)

_MISSING: Final = object()
_FIELDS: Final[frozenset[str]] = frozenset(Rule.__struct_fields__)
# Columns a `SELECT *` brings along that say nothing about the rule itself (managed_by, 008:
# the config file that declares the rule, bookkeeping of `rtmh config apply`).
_IGNORED_COLUMNS: Final[frozenset[str]] = frozenset({"created_at", "updated_at", "managed_by"})


def validate_rule(fields: Mapping[str, object]) -> Rule:
    """Check an ``alert_rules`` row or an API payload and build a :class:`Rule`.

    Missing optional fields take the column defaults of 001. Raises :class:`RuleError` naming the
    first offending field; the checks are at least as strict as the table's CHECK constraints, so
    a rule that passes here never fails the INSERT on a constraint.
    """
    unknown = sorted(set(fields) - _FIELDS - _IGNORED_COLUMNS)
    if unknown:
        raise RuleError(unknown[0], "unknown field")
    rule_id = _whole(fields, "id", minimum=0, default=0)
    condition = cast(Condition, _choice(fields, "condition", CONDITIONS))
    threshold = _number(fields, "threshold")
    recovery = _optional_number(fields, "recovery_threshold")
    aggregation = cast(Aggregation, _choice(fields, "aggregation", AGGREGATIONS, default="value"))
    no_data = _optional_whole(fields, "no_data_seconds", minimum=1)
    rule = Rule(
        id=rule_id,
        name=_text(fields, "name"),
        source=_text(fields, "source", default="threshold_monitor"),
        metric_type=_text(fields, "metric_type"),
        aggregation=aggregation,
        condition=condition,
        threshold=threshold,
        recovery_threshold=recovery,
        for_seconds=_whole(fields, "for_seconds", minimum=0, default=0),
        window_key_pattern=_text(fields, "window_key_pattern", default="*"),
        min_count=_whole(fields, "min_count", minimum=0, default=20),
        no_data_seconds=no_data,
        resolve_after_seconds=_whole(fields, "resolve_after_seconds", minimum=0, default=30),
        severity=cast(Severity, _choice(fields, "severity", SEVERITIES, default="medium")),
        channels=_channels(fields),
        enabled=_flag(fields, "enabled", default=True),
        repeat_interval_seconds=_whole(fields, "repeat_interval_seconds", minimum=1, default=3600),
        description=_optional_text(fields, "description"),
        runbook_url=_runbook_url(fields),
    )
    _check_recovery(rule)
    _check_absence(rule)
    return rule


def _check_recovery(rule: Rule) -> None:
    """Hysteresis only makes sense when the recovery threshold is on the healthy side."""
    recovery = rule.recovery_threshold
    if recovery is None:
        return
    if rule.no_data_seconds is not None:
        raise RuleError("recovery_threshold", "absence rules (no_data_seconds set) do not use it")
    if rule.condition in ("==", "!="):
        raise RuleError(
            "recovery_threshold",
            f"only meaningful for >, >=, < and <=, not for {rule.condition!r}",
        )
    if rule.condition in (">", ">=") and recovery > rule.threshold:
        raise RuleError(
            "recovery_threshold",
            f"{recovery:g} must be <= threshold {rule.threshold:g} for condition "
            f"{rule.condition!r} (the incident clears below it)",
        )
    if rule.condition in ("<", "<=") and recovery < rule.threshold:
        raise RuleError(
            "recovery_threshold",
            f"{recovery:g} must be >= threshold {rule.threshold:g} for condition "
            f"{rule.condition!r} (the incident clears above it)",
        )


def _check_absence(rule: Rule) -> None:
    """An absence rule fires on "no events", i.e. a count of 0; its condition must say so."""
    if rule.no_data_seconds is None:
        return
    if rule.aggregation != "count":
        raise RuleError(
            "aggregation",
            f"an absence rule (no_data_seconds set) must use 'count', not {rule.aggregation!r}",
        )
    if not crosses(rule.condition, 0.0, rule.threshold):
        raise RuleError(
            "condition",
            f"an absence rule fires on a count of 0, but 'count {rule.condition} "
            f"{rule.threshold:g}' is false for 0 (use e.g. count < 1)",
        )


def _get(fields: Mapping[str, object], name: str, default: object) -> object:
    value = fields.get(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise RuleError(name, "required")
        return default
    if value is None and default is not None:
        raise RuleError(name, "must not be null")
    return value


def _text(fields: Mapping[str, object], name: str, default: object = _MISSING) -> str:
    value = _get(fields, name, default)
    if not isinstance(value, str):
        raise RuleError(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RuleError(name, "must not be empty")
    return value


def _optional_text(fields: Mapping[str, object], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RuleError(name, f"must be a string or null, got {type(value).__name__}")
    return value


def _runbook_url(fields: Mapping[str, object]) -> str | None:
    url = _optional_text(fields, "runbook_url")
    if url is None or not url.strip():
        return None
    # The dashboard renders it as a link: only http(s), never javascript: or data: URLs.
    if not url.lower().startswith(("http://", "https://")):
        raise RuleError("runbook_url", "must be an http:// or https:// URL")
    return url


def _choice(
    fields: Mapping[str, object],
    name: str,
    options: Sequence[str],
    default: object = _MISSING,
) -> str:
    value = _get(fields, name, default)
    if not isinstance(value, str) or value not in options:
        raise RuleError(name, f"unknown value {value!r}; expected one of {', '.join(options)}")
    return value


def _as_number(name: str, value: object) -> float:
    # bool is an int subclass; `true` as a threshold is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(name, f"must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise RuleError(name, f"must be finite, got {number}")
    return number


def _number(fields: Mapping[str, object], name: str) -> float:
    return _as_number(name, _get(fields, name, _MISSING))


def _optional_number(fields: Mapping[str, object], name: str) -> float | None:
    value = fields.get(name)
    return None if value is None else _as_number(name, value)


def _as_whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(name, f"must be a whole number, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise RuleError(name, f"must be a whole number, got {value}")
    number = int(value)
    if number < minimum:
        raise RuleError(name, f"must be >= {minimum}, got {number}")
    if number > _PG_INT_MAX:
        raise RuleError(name, f"must be <= {_PG_INT_MAX}, got {number}")
    return number


def _whole(fields: Mapping[str, object], name: str, *, minimum: int, default: object) -> int:
    return _as_whole(name, _get(fields, name, default), minimum)


def _optional_whole(fields: Mapping[str, object], name: str, *, minimum: int) -> int | None:
    value = fields.get(name)
    return None if value is None else _as_whole(name, value, minimum)


def _flag(fields: Mapping[str, object], name: str, *, default: bool) -> bool:
    value = _get(fields, name, default)
    if not isinstance(value, bool):
        raise RuleError(name, f"must be true or false, got {type(value).__name__}")
    return value


def _channels(fields: Mapping[str, object]) -> tuple[str, ...]:
    value = _get(fields, "channels", ())
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise RuleError("channels", f"must be a list of channel names, got {type(value).__name__}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _CHANNEL_NAME.fullmatch(item):
            raise RuleError("channels", f"invalid channel name {item!r}")
        # A duplicate would emit two notifications with the same idempotency key (UNIQUE).
        if item not in names:
            names.append(item)
    return tuple(names)
