"""Rule evaluation: from the windows a batch touched to one verdict per (rule, window_key).

Role in the flow: after a batch commits, the worker hands the merged windows it touched to
:func:`evaluate_all` (or :func:`evaluate` per key), and periodically the newest data time per key
to :func:`evaluate_absence` for absence rules. The resulting :class:`Observation` goes to
:func:`rtmh.rules.lifecycle.step`. Everything here is pure: no clock, no I/O.

A verdict is three-valued: ``firing`` True (the threshold is crossed), False (it is not) or None
(no verdict: no usable window, e.g. too few events for a ratio). "Insufficient data" is never
"clear", so a thin window can neither open nor resolve an incident.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Final, assert_never

import msgspec

from rtmh.records import SYNTHETIC_WINDOW_KEYS
from rtmh.rules.condition import crosses
from rtmh.rules.model import COUNT_METRIC_TYPES, Rule, WindowValue

__all__ = [
    "Observation",
    "evaluate",
    "evaluate_absence",
    "evaluate_all",
    "evaluate_silent",
    "key_matches",
    "matches",
    "needs_min_count",
    "pick",
]

# Aggregations whose value means little on a thin window (DESIGN "Rules and incidents").
_GATED: Final[frozenset[str]] = frozenset({"avg", "p50", "p95", "p99"})


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """One verdict of one rule on one window_key at one instant.

    ``firing``: the rule's threshold is crossed. ``holding``: the recovery threshold is crossed
    (equal to ``firing`` when the rule has none): a live incident stays live while ``holding``.
    Both are None when there is no verdict, and ``firing`` implies ``holding``.
    """

    rule_id: int
    window_key: str
    #: evaluation time (epoch seconds)
    at: float
    firing: bool | None
    holding: bool | None
    #: the picked aggregate (0 events for an absence); None without a verdict
    observed: float | None = None
    #: the window the verdict is based on (None for absence verdicts and for no verdict)
    window: WindowValue | None = None
    #: human-readable why, e.g. "error_rate 0.31 > 0.05 over [12:00:10, 12:01:10) with 64 events"
    reason: str
    #: absence verdicts: when the key last had data
    last_data_at: float | None = None

    def __post_init__(self) -> None:
        if (self.firing is None) != (self.holding is None):
            raise ValueError("firing and holding must both be None or both be set")
        if self.firing and not self.holding:
            raise ValueError("a firing observation is also holding")


def key_matches(pattern: str, window_key: str) -> bool:
    """Shell-style (fnmatch, case-sensitive) match of a window_key against a rule pattern.

    The synthetic keys are special: a per-service pattern such as ``*`` or ``?*`` must not also
    fire on the all-services aggregate ``__all__``, nor on ``__other__`` (the services a worker's
    window-key budget folded, docs/cardinality.md), so they are selected only by a pattern that
    starts with ``__`` literally (``__all__`` itself, ``__*``) and matches them.
    """
    if window_key in SYNTHETIC_WINDOW_KEYS:
        return pattern.startswith("__") and fnmatchcase(window_key, pattern)
    return fnmatchcase(window_key, pattern)


def matches(rule: Rule, window_key: str) -> bool:
    """Whether ``rule`` applies to ``window_key`` (see :func:`key_matches`)."""
    return key_matches(rule.window_key_pattern, window_key)


def pick(rule: Rule, wv: WindowValue) -> float | None:
    """The rule's aggregation from one window, or None when the window does not have it.

    ``value`` and ``avg`` both read the window's natural aggregate (rate for error_rate, mean for
    metrics), falling back to sum/count. Non-finite values count as missing: a NaN compares
    false with everything and must neither fire nor clear anything.
    """
    raw: float | None
    match rule.aggregation:
        case "value" | "avg":
            raw = wv.value
            if raw is None and wv.count > 0:
                raw = wv.sum / wv.count
        case "sum":
            raw = wv.sum
        case "count":
            raw = float(wv.count)
        case "min":
            raw = wv.min
        case "max":
            raw = wv.max
        case "p50":
            raw = wv.p50
        case "p95":
            raw = wv.p95
        case "p99":
            raw = wv.p99
        case unreachable:
            assert_never(unreachable)
    if raw is None or not math.isfinite(raw):
        return None
    return float(raw)


def needs_min_count(rule: Rule) -> bool:
    """Ratio and quantile aggregations give a verdict only on windows with >= min_count events.

    ``value`` is a ratio (error_rate) or a mean for every metric type except the plain counts.
    """
    if rule.aggregation in _GATED:
        return True
    return rule.aggregation == "value" and rule.metric_type not in COUNT_METRIC_TYPES


def evaluate(rule: Rule, windows: Sequence[WindowValue], now: float) -> Observation:
    """The verdict of ``rule`` on the windows a batch touched for ONE window_key.

    Windows of other metric types are ignored. The verdict comes from the newest window (latest
    window_start) that has enough data: on a gated aggregation (:func:`needs_min_count`) a
    window with fewer than ``min_count`` events is skipped, as is one lacking the aggregation;
    when none is left there is no verdict. Absence rules, disabled rules and keys the pattern
    does not select also give no verdict. Raises ValueError when ``windows`` is empty or mixes
    window keys (a caller bug: group by key first, or use :func:`evaluate_all`).
    """
    key = _single_key(windows)
    if not rule.enabled:
        return _no_verdict(rule, key, now, "rule is disabled")
    if rule.no_data_seconds is not None:
        return _no_verdict(rule, key, now, "absence rule: judged by evaluate_absence")
    if not matches(rule, key):
        return _no_verdict(
            rule, key, now, f"{key!r} does not match pattern {rule.window_key_pattern!r}"
        )
    candidates = sorted(
        (w for w in windows if w.metric_type == rule.metric_type),
        key=lambda w: (w.window_start, w.window_end),
        reverse=True,
    )
    if not candidates:
        return _no_verdict(rule, key, now, f"no {rule.metric_type} window")
    gated = needs_min_count(rule)
    first_problem: str | None = None
    for wv in candidates:
        problem: str | None = None
        observed: float | None = None
        if gated and wv.count < rule.min_count:
            problem = f"holds {_events(wv.count)}, fewer than min_count {rule.min_count}"
        else:
            observed = pick(rule, wv)
            if observed is None:
                problem = f"has no {rule.aggregation} value"
        if observed is not None:
            return _verdict(rule, key, wv, observed, now)
        if first_problem is None:
            first_problem = f"newest window {_span(wv)} {problem}"
    return _no_verdict(rule, key, now, f"insufficient data: {first_problem}")


def evaluate_all(
    rules: Iterable[Rule], windows: Iterable[WindowValue], now: float
) -> list[tuple[Rule, Observation]]:
    """One :func:`evaluate` per (enabled threshold rule, matching key with windows of its type).

    Absence rules are skipped (see :func:`evaluate_absence`). Output order is deterministic:
    rules in the given order, keys sorted.
    """
    by_type: dict[str, dict[str, list[WindowValue]]] = {}
    for wv in windows:
        by_type.setdefault(wv.metric_type, {}).setdefault(wv.window_key, []).append(wv)
    results: list[tuple[Rule, Observation]] = []
    for rule in rules:
        if not rule.enabled or rule.no_data_seconds is not None:
            continue
        per_key = by_type.get(rule.metric_type, {})
        for key in sorted(per_key):
            if matches(rule, key):
                results.append((rule, evaluate(rule, per_key[key], now)))
    return results


def evaluate_absence(
    rule: Rule, last_seen_by_key: Mapping[str, float], now: float
) -> list[tuple[str, Observation]]:
    """Verdicts of an absence rule (``no_data_seconds`` set) for every key it selects.

    ``last_seen_by_key`` maps each window_key that has ever had data of ``rule.metric_type``
    to the time of its newest data (epoch seconds; e.g. max(window_start) + slide from
    metrics_agg, which is within one slide of the newest event). A key silent for at least
    ``no_data_seconds`` fires (observed = 0 events); a key with recent data gives a clear verdict,
    which is how an absence incident resolves when data comes back. Keys never seen are not in the
    mapping and cannot fire: silence is only news for a key that used to talk. Returns [] for
    disabled rules and for rules that are not absence rules. Keys come out sorted.
    """
    limit = rule.no_data_seconds
    if limit is None or not rule.enabled:
        return []
    results: list[tuple[str, Observation]] = []
    for key in sorted(last_seen_by_key):
        if not matches(rule, key):
            continue
        last = last_seen_by_key[key]
        silent = now - last
        if silent >= limit:
            obs = Observation(
                rule_id=rule.id,
                window_key=key,
                at=now,
                firing=True,
                holding=True,
                observed=0.0,
                reason=(
                    f"no {rule.metric_type} data from {key} for {silent:.0f} s "
                    f"(limit {limit} s, last at {_clock(last)})"
                ),
                last_data_at=last,
            )
        else:
            obs = Observation(
                rule_id=rule.id,
                window_key=key,
                at=now,
                firing=False,
                holding=False,
                reason=(
                    f"{rule.metric_type} data from {key} {max(silent, 0.0):.0f} s ago "
                    f"(limit {limit} s)"
                ),
                last_data_at=last,
            )
        results.append((key, obs))
    return results


def _single_key(windows: Sequence[WindowValue]) -> str:
    if not windows:
        raise ValueError("evaluate() needs at least one window")
    keys = {w.window_key for w in windows}
    if len(keys) != 1:
        raise ValueError(f"evaluate() takes the windows of one window_key, got {sorted(keys)}")
    return windows[0].window_key


def _verdict(rule: Rule, key: str, wv: WindowValue, observed: float, now: float) -> Observation:
    firing = crosses(rule.condition, observed, rule.threshold)
    recovery = rule.recovery_threshold
    holding = firing or (recovery is not None and crosses(rule.condition, observed, recovery))
    label = _label(rule)
    if firing:
        text = f"{label} {_num(observed)} {rule.condition} {_num(rule.threshold)}"
    else:
        text = f"{label} {_num(observed)} is not {rule.condition} {_num(rule.threshold)}"
        if recovery is not None:
            joiner = "but still" if holding else "nor"
            text += f", {joiner} {rule.condition} {_num(recovery)} (recovery threshold)"
    return Observation(
        rule_id=rule.id,
        window_key=key,
        at=now,
        firing=firing,
        holding=holding,
        observed=observed,
        window=wv,
        reason=f"{text} over {_span(wv)} with {_events(wv.count)}",
    )


def _no_verdict(rule: Rule, key: str, now: float, why: str) -> Observation:
    return Observation(
        rule_id=rule.id, window_key=key, at=now, firing=None, holding=None, reason=why
    )


def _label(rule: Rule) -> str:
    if rule.aggregation == "value":
        return rule.metric_type
    return f"{rule.aggregation}({rule.metric_type})"


def _num(x: float) -> str:
    return f"{x:.6g}"


def _events(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def evaluate_silent(rule: Rule, window_key: str, now: float, window_size_s: float) -> Observation:
    """The verdict on a key that has no window covering ``now`` (its traffic stopped): the
    condition counts as cleared, so a live incident resolves instead of staying open for ever.
    The engine's tick and the backtest both judge silent keys with this."""
    return Observation(
        rule_id=rule.id,
        window_key=window_key,
        at=now,
        firing=False,
        holding=False,
        reason=f"no {rule.metric_type} data in the last {window_size_s:g} s: "
        "the condition is treated as cleared",
    )


# Window bounds repeat across keys and evaluations (every key shares the slide's grid), and
# formatting them was ~40 % of evaluate's cost in the backtest's profile.
@functools.lru_cache(maxsize=4096)
def _clock(ts: float) -> str:
    """UTC wall-clock time of an epoch timestamp, with milliseconds only when they are there."""
    moment = datetime.fromtimestamp(ts, UTC)
    if moment.microsecond:
        return moment.strftime("%H:%M:%S.%f")[:-3]
    return moment.strftime("%H:%M:%S")


def _span(wv: WindowValue) -> str:
    return f"[{_clock(wv.window_start)}, {_clock(wv.window_end)})"
