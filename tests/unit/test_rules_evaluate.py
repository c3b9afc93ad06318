"""Rule validation and evaluation: pure functions, no database."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmh.rules.condition import CONDITIONS, Condition, crosses, worse
from rtmh.rules.evaluate import (
    Observation,
    evaluate,
    evaluate_absence,
    evaluate_all,
    key_matches,
    matches,
    needs_min_count,
    pick,
)
from rtmh.rules.model import (
    AGGREGATIONS,
    Aggregation,
    Rule,
    RuleError,
    WindowValue,
    validate_rule,
)

T0 = datetime(2024, 5, 1, 12, 0, 10, tzinfo=UTC).timestamp()

# The four rules of 002_sample_data.sql, as the DB returns them.
SAMPLE_ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "high_error_rate",
        "description": "More than 5% of a service's log lines are errors",
        "source": "error_rate_monitor",
        "metric_type": "error_rate",
        "aggregation": "value",
        "condition": ">",
        "threshold": 0.05,
        "recovery_threshold": 0.02,
        "for_seconds": 0,
        "window_key_pattern": "*",
        "min_count": 20,
        "no_data_seconds": None,
        "resolve_after_seconds": 20,
        "severity": "high",
        "channels": ["demo-webhook"],
        "enabled": True,
        "repeat_interval_seconds": 1800,
        "runbook_url": "https://runbooks.example/rtmh/high-error-rate",
        "created_at": datetime(2024, 5, 1, tzinfo=UTC),
        "updated_at": datetime(2024, 5, 1, tzinfo=UTC),
    },
    {
        "id": 2,
        "name": "high_latency_p95",
        "source": "latency_monitor",
        "metric_type": "http_request_duration_ms",
        "aggregation": "p95",
        "condition": ">",
        "threshold": 500.0,
        "recovery_threshold": 400.0,
        "min_count": 20,
        "resolve_after_seconds": 20,
        "channels": ["demo-webhook"],
        "repeat_interval_seconds": 1800,
    },
    {
        "id": 3,
        "name": "high_cpu",
        "source": "resource_monitor",
        "metric_type": "cpu_usage_percent",
        "aggregation": "avg",
        "condition": ">",
        "threshold": 90,
        "for_seconds": 60,
        "min_count": 1,
        "channels": [],
    },
    {
        "id": 4,
        "name": "service_silent",
        "source": "no_data_monitor",
        "metric_type": "log_count",
        "aggregation": "count",
        "condition": "<",
        "threshold": 1,
        "min_count": 0,
        "no_data_seconds": 120,
        "severity": "high",
        "channels": ["demo-webhook"],
    },
]


def make_rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "id": 7,
        "name": "r",
        "metric_type": "error_rate",
        "condition": ">",
        "threshold": 0.05,
    }
    fields.update(overrides)
    return validate_rule(fields)


def window(
    start: float = T0,
    *,
    key: str = "checkout",
    metric_type: str = "error_rate",
    size: float = 60.0,
    **values: Any,
) -> WindowValue:
    return WindowValue(
        window_key=key,
        metric_type=metric_type,
        window_start=start,
        window_end=start + size,
        **values,
    )


# --------------------------------------------------------------------------- validate_rule


@pytest.mark.parametrize("row", SAMPLE_ROWS, ids=lambda r: str(r["name"]))
def test_sample_rules_validate(row: dict[str, Any]) -> None:
    rule = validate_rule(row)
    assert rule.name == row["name"]
    assert rule.channels == tuple(row["channels"])


def test_defaults_follow_the_column_defaults() -> None:
    rule = validate_rule({"name": "x", "metric_type": "m", "condition": ">", "threshold": 1})
    assert rule.id == 0
    assert rule.source == "threshold_monitor"
    assert rule.aggregation == "value"
    assert rule.window_key_pattern == "*"
    assert rule.min_count == 20
    assert rule.resolve_after_seconds == 30
    assert rule.severity == "medium"
    assert rule.repeat_interval_seconds == 3600
    assert rule.enabled is True
    assert rule.channels == ()
    assert isinstance(rule.threshold, float)


def test_duplicate_channels_are_merged() -> None:
    assert make_rule(channels=["a", "b", "a"]).channels == ("a", "b")


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"aggregation": "median"}, "aggregation", "unknown value 'median'"),
        ({"condition": "=>"}, "condition", "unknown value '=>'"),
        ({"threshold": math.nan}, "threshold", "finite"),
        ({"threshold": math.inf}, "threshold", "finite"),
        ({"threshold": "0.05"}, "threshold", "number"),
        ({"threshold": True}, "threshold", "number"),
        ({"for_seconds": -1}, "for_seconds", ">= 0"),
        ({"for_seconds": 1.5}, "for_seconds", "whole"),
        ({"resolve_after_seconds": -5}, "resolve_after_seconds", ">= 0"),
        ({"repeat_interval_seconds": 0}, "repeat_interval_seconds", ">= 1"),
        ({"no_data_seconds": 0, "aggregation": "count"}, "no_data_seconds", ">= 1"),
        ({"min_count": -1}, "min_count", ">= 0"),
        ({"min_count": 2**31}, "min_count", "<="),
        ({"window_key_pattern": ""}, "window_key_pattern", "empty"),
        ({"window_key_pattern": "  "}, "window_key_pattern", "empty"),
        ({"name": " "}, "name", "empty"),
        ({"severity": "urgent"}, "severity", "unknown value"),
        ({"channels": "ops"}, "channels", "list"),
        ({"channels": ["bad name"]}, "channels", "invalid channel name"),
        ({"enabled": "yes"}, "enabled", "true or false"),
        ({"runbook_url": "javascript:alert(1)"}, "runbook_url", "http"),
        ({"treshold": 1}, "treshold", "unknown field"),
        ({"aggregation": None}, "aggregation", "null"),
        # hysteresis on the wrong side
        ({"recovery_threshold": 0.08}, "recovery_threshold", "<= threshold"),
        (
            {"condition": "<", "threshold": 10, "recovery_threshold": 5},
            "recovery_threshold",
            ">= threshold",
        ),
        ({"condition": "==", "recovery_threshold": 0.05}, "recovery_threshold", "meaningful"),
        ({"recovery_threshold": math.nan}, "recovery_threshold", "finite"),
        # absence rules
        ({"no_data_seconds": 60}, "aggregation", "must use 'count'"),
        (
            {"no_data_seconds": 60, "aggregation": "count", "condition": ">", "threshold": 0},
            "condition",
            "false for 0",
        ),
        (
            {
                "no_data_seconds": 60,
                "aggregation": "count",
                "condition": "<",
                "threshold": 1,
                "recovery_threshold": 2,
            },
            "recovery_threshold",
            "absence",
        ),
    ],
)
def test_invalid_rules_name_the_field(overrides: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(RuleError) as caught:
        make_rule(**overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert words in str(caught.value)


@pytest.mark.parametrize("missing", ["name", "metric_type", "condition", "threshold"])
def test_required_fields(missing: str) -> None:
    fields: dict[str, object] = {"name": "x", "metric_type": "m", "condition": ">", "threshold": 1}
    del fields[missing]
    with pytest.raises(RuleError, match=f"^{missing}: required"):
        validate_rule(fields)


def test_recovery_equal_to_threshold_is_accepted() -> None:
    assert make_rule(recovery_threshold=0.05).recovery_threshold == 0.05


# --------------------------------------------------------------------------- matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("*", "checkout", True),
        ("*", "__all__", False),
        ("?*", "__all__", False),
        ("[_]*", "__all__", False),
        ("__all__", "__all__", True),
        ("__all__", "checkout", False),
        ("__*", "__all__", True),
        ("*", "__other__", False),
        ("?*", "__other__", False),
        ("__other__", "__other__", True),
        ("__*", "__other__", True),
        ("check*", "checkout", True),
        ("check*", "payments", False),
        ("Check*", "checkout", False),  # case-sensitive on every platform
        ("pay?ents", "payments", True),
        ("[cp]*", "payments", True),
    ],
)
def test_key_matches(pattern: str, key: str, expected: bool) -> None:
    assert key_matches(pattern, key) is expected
    assert matches(make_rule(window_key_pattern=pattern), key) is expected


# --------------------------------------------------------------------------- pick

FULL: dict[str, Any] = {
    "count": 50,
    "value": 0.5,
    "sum": 25.0,
    "min": 0.1,
    "max": 0.9,
    "p50": 0.4,
    "p95": 0.8,
    "p99": 0.85,
}
PICKED: dict[Aggregation, float] = {
    "value": 0.5,
    "avg": 0.5,
    "min": 0.1,
    "max": 0.9,
    "sum": 25.0,
    "count": 50.0,
    "p50": 0.4,
    "p95": 0.8,
    "p99": 0.85,
}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_pick_every_aggregation(aggregation: Aggregation) -> None:
    assert pick(make_rule(aggregation=aggregation), window(**FULL)) == PICKED[aggregation]


@pytest.mark.parametrize("aggregation", ["value", "avg"])
def test_pick_value_falls_back_to_sum_over_count(aggregation: Aggregation) -> None:
    rule = make_rule(aggregation=aggregation)
    assert pick(rule, window(count=4, sum=10.0)) == 2.5
    assert pick(rule, window(count=0, sum=0.0)) is None


@pytest.mark.parametrize("aggregation", ["min", "max", "p50", "p95", "p99"])
def test_pick_missing_or_nan_is_none(aggregation: Aggregation) -> None:
    rule = make_rule(aggregation=aggregation)
    assert pick(rule, window(count=5)) is None
    nan: dict[str, Any] = {aggregation: math.nan}
    assert pick(rule, window(count=5, **nan)) is None


# --------------------------------------------------------------------------- crosses

# For thresholds (v - 1, v, v + 1): does `v <condition> threshold` hold?
TRUTH: dict[Condition, tuple[bool, bool, bool]] = {
    ">": (True, False, False),
    ">=": (True, True, False),
    "<": (False, False, True),
    "<=": (False, True, True),
    "==": (False, True, False),
    "!=": (True, False, True),
}


@pytest.mark.parametrize("condition", CONDITIONS)
def test_crosses_table(condition: Condition) -> None:
    v = 3.0
    assert tuple(crosses(condition, v, t) for t in (v - 1, v, v + 1)) == TRUTH[condition]


def test_equality_has_a_float_tolerance() -> None:
    assert crosses("==", 0.1 + 0.2, 0.3)
    assert not crosses("!=", 0.1 + 0.2, 0.3)
    assert crosses("==", 1e-15, 0.0)
    assert not crosses("==", 1e-6, 0.0)
    assert not crosses("==", 1000.001, 1000.0)
    # ordering conditions are exact
    assert crosses(">", 0.1 + 0.2, 0.3)


@pytest.mark.parametrize(
    ("condition", "candidate", "current", "expected"),
    [
        (">", 0.4, 0.3, True),
        (">=", 0.3, 0.4, False),
        ("<", 10.0, 20.0, True),
        ("<=", 20.0, 10.0, False),
        # != : further from the threshold (5) on either side
        ("!=", 1.0, 7.0, True),
        ("!=", 6.0, 2.0, False),
        # == : every firing value equals the threshold; nothing is worse
        ("==", 5.0, 5.0, False),
    ],
)
def test_worse_is_further_on_the_bad_side(
    condition: Condition, candidate: float, current: float, expected: bool
) -> None:
    assert worse(condition, 5.0, candidate, current) is expected


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("condition", CONDITIONS)
def test_evaluate_every_condition_and_aggregation(
    condition: Condition, aggregation: Aggregation
) -> None:
    v = PICKED[aggregation]
    for threshold, expected in zip((v - 1, v, v + 1), TRUTH[condition], strict=True):
        rule = make_rule(condition=condition, aggregation=aggregation, threshold=threshold)
        obs = evaluate(rule, [window(**FULL)], T0 + 5)
        assert obs.firing is expected, obs.reason
        assert obs.holding is expected
        assert obs.observed == v
        assert obs.window == window(**FULL)
        assert obs.rule_id == 7
        assert obs.window_key == "checkout"
        assert obs.at == T0 + 5


def test_reason_is_readable() -> None:
    obs = evaluate(make_rule(), [window(count=64, value=0.3125)], T0 + 30)
    assert obs.reason == "error_rate 0.3125 > 0.05 over [12:00:10, 12:01:10) with 64 events"
    p95 = make_rule(metric_type="latency_ms", aggregation="p95", threshold=500)
    obs = evaluate(p95, [window(metric_type="latency_ms", count=1, p95=612.0)], T0)
    assert obs.firing is None
    assert "newest window [12:00:10, 12:01:10) holds 1 event, fewer than min_count 20" in (
        obs.reason
    )
    obs = evaluate(make_rule(), [window(count=64, value=0.01)], T0)
    assert obs.reason.startswith("error_rate 0.01 is not > 0.05 over")


def test_one_error_out_of_one_line_does_not_fire() -> None:
    obs = evaluate(make_rule(), [window(count=1, value=1.0, sum=1.0)], T0)
    assert obs.firing is None
    assert obs.holding is None
    assert obs.observed is None
    assert "insufficient data" in obs.reason


@pytest.mark.parametrize("aggregation", ["value", "avg", "p50", "p95", "p99"])
def test_ratio_and_quantile_aggregations_are_gated(aggregation: Aggregation) -> None:
    rule = make_rule(aggregation=aggregation, min_count=20, threshold=0.0)
    assert needs_min_count(rule)
    assert evaluate(rule, [window(**{**FULL, "count": 19})], T0).firing is None
    assert evaluate(rule, [window(**{**FULL, "count": 20})], T0).firing is True


@pytest.mark.parametrize("aggregation", ["min", "max", "sum", "count"])
def test_plain_aggregations_are_not_gated(aggregation: Aggregation) -> None:
    rule = make_rule(aggregation=aggregation, min_count=20, threshold=0.0)
    assert not needs_min_count(rule)
    assert evaluate(rule, [window(**{**FULL, "count": 1})], T0).firing is True


def test_value_of_a_count_metric_is_not_gated() -> None:
    rule = make_rule(metric_type="log_count", condition="<", threshold=5, min_count=20)
    assert not needs_min_count(rule)
    obs = evaluate(rule, [window(metric_type="log_count", count=2, value=2.0)], T0)
    assert obs.firing is True


def test_min_count_zero_accepts_any_window() -> None:
    rule = make_rule(min_count=0)
    assert evaluate(rule, [window(count=1, value=1.0)], T0).firing is True


def test_newest_window_with_enough_data_decides() -> None:
    older = window(T0, count=64, value=0.02)
    newer = window(T0 + 10, count=40, value=0.5)
    newest_thin = window(T0 + 20, count=3, value=1.0)
    rule = make_rule()
    assert evaluate(rule, [older, newer, newest_thin], T0 + 25).window == newer
    assert evaluate(rule, [newest_thin, older], T0 + 25).window == older
    assert evaluate(rule, [newest_thin, older], T0 + 25).firing is False


def test_window_without_the_aggregation_is_skipped() -> None:
    rule = make_rule(metric_type="lat", aggregation="p95", threshold=500, min_count=1)
    newest = window(T0 + 10, metric_type="lat", count=5)  # no sketch
    older = window(T0, metric_type="lat", count=5, p95=700.0)
    obs = evaluate(rule, [newest, older], T0 + 12)
    assert obs.window == older
    assert obs.firing is True


def test_other_metric_types_are_ignored() -> None:
    rule = make_rule()
    obs = evaluate(rule, [window(metric_type="log_count", count=100, value=100.0)], T0)
    assert obs.firing is None
    assert obs.reason == "no error_rate window"


def test_hysteresis_flags() -> None:
    rule = make_rule(recovery_threshold=0.02)
    high = evaluate(rule, [window(count=50, value=0.08)], T0)
    middle = evaluate(rule, [window(count=50, value=0.03)], T0)
    low = evaluate(rule, [window(count=50, value=0.01)], T0)
    assert (high.firing, high.holding) == (True, True)
    assert (middle.firing, middle.holding) == (False, True)
    assert "but still > 0.02 (recovery threshold)" in middle.reason
    assert (low.firing, low.holding) == (False, False)
    assert "nor > 0.02 (recovery threshold)" in low.reason


def test_hysteresis_for_a_less_than_rule() -> None:
    rule = make_rule(
        metric_type="throughput",
        condition="<",
        threshold=10,
        recovery_threshold=20,
        min_count=1,
    )
    middle = evaluate(rule, [window(metric_type="throughput", count=5, value=15.0)], T0)
    assert (middle.firing, middle.holding) == (False, True)


def test_no_verdict_cases() -> None:
    w = [window(count=50, value=0.5)]
    assert evaluate(make_rule(enabled=False), w, T0).firing is None
    assert evaluate(make_rule(window_key_pattern="pay*"), w, T0).firing is None
    absence = make_rule(no_data_seconds=60, aggregation="count", condition="<", threshold=1)
    assert evaluate(absence, w, T0).firing is None
    glob = [window(key="__all__", count=50, value=0.5)]
    assert evaluate(make_rule(), glob, T0).firing is None
    assert evaluate(make_rule(window_key_pattern="__all__"), glob, T0).firing is True


def test_evaluate_rejects_caller_bugs() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        evaluate(make_rule(), [], T0)
    with pytest.raises(ValueError, match="one window_key"):
        evaluate(make_rule(), [window(key="a"), window(key="b")], T0)


def test_evaluate_all_groups_by_key_and_skips() -> None:
    rules = [
        make_rule(id=1),
        make_rule(id=2, enabled=False),
        make_rule(id=3, no_data_seconds=60, aggregation="count", condition="<", threshold=1),
        make_rule(id=4, window_key_pattern="__all__"),
        make_rule(id=5, metric_type="log_count", aggregation="count", threshold=1),
    ]
    windows = [
        window(key="payments", count=50, value=0.5),
        window(key="checkout", count=50, value=0.01),
        window(T0 + 10, key="checkout", count=30, value=0.2),
        window(key="__all__", count=80, value=0.3),
    ]
    results = evaluate_all(rules, windows, T0 + 15)
    summary = [(r.id, o.window_key, o.firing) for r, o in results]
    assert summary == [
        (1, "checkout", True),
        (1, "payments", True),
        (4, "__all__", True),
    ]


# --------------------------------------------------------------------------- absence

ABSENCE = {
    "id": 9,
    "metric_type": "log_count",
    "aggregation": "count",
    "condition": "<",
    "threshold": 1,
    "min_count": 0,
    "no_data_seconds": 120,
}


def test_absence_fires_for_a_silent_key_and_clears_when_data_returns() -> None:
    rule = make_rule(**ABSENCE)
    now = T0 + 1000
    results = dict(
        evaluate_absence(
            rule, {"checkout": now - 125, "payments": now - 3, "__all__": now - 500}, now
        )
    )
    assert set(results) == {"checkout", "payments"}  # '*' does not select the global key
    silent = results["checkout"]
    assert (silent.firing, silent.holding, silent.observed) == (True, True, 0.0)
    assert silent.last_data_at == now - 125
    assert "no log_count data from checkout for 125 s (limit 120 s" in silent.reason
    back = results["payments"]
    assert (back.firing, back.holding) == (False, False)


def test_absence_boundary_and_non_absence_rules() -> None:
    rule = make_rule(**ABSENCE)
    [(_, at_limit)] = evaluate_absence(rule, {"a": T0}, T0 + 120)
    assert at_limit.firing is True
    [(_, just_before)] = evaluate_absence(rule, {"a": T0}, T0 + 119.9)
    assert just_before.firing is False
    # data from the future (clock skew) is simply recent
    [(_, skewed)] = evaluate_absence(rule, {"a": T0 + 5}, T0)
    assert skewed.firing is False
    assert evaluate_absence(make_rule(), {"a": T0}, T0 + 999) == []
    disabled = make_rule(**ABSENCE, enabled=False)
    assert evaluate_absence(disabled, {"a": T0}, T0 + 999) == []


def test_observation_invariants() -> None:
    with pytest.raises(ValueError):
        Observation(rule_id=1, window_key="k", at=0, firing=True, holding=False, reason="")
    with pytest.raises(ValueError):
        Observation(rule_id=1, window_key="k", at=0, firing=None, holding=True, reason="")


@given(
    condition=st.sampled_from(CONDITIONS),
    threshold=st.floats(-1e6, 1e6),
    recovery_offset=st.floats(0, 1e3),
    value=st.floats(-1e6, 1e6),
    count=st.integers(0, 100),
)
def test_firing_implies_holding(
    condition: Condition, threshold: float, recovery_offset: float, value: float, count: int
) -> None:
    recovery: float | None = None
    if condition in (">", ">="):
        recovery = threshold - recovery_offset
    elif condition in ("<", "<="):
        recovery = threshold + recovery_offset
    rule = make_rule(condition=condition, threshold=threshold, recovery_threshold=recovery)
    obs = evaluate(rule, [window(count=count, value=value)], T0)
    if count < rule.min_count:
        assert obs.firing is None
    else:
        assert obs.firing is crosses(condition, value, threshold)
        assert obs.holding is not None
        assert obs.holding >= obs.firing
