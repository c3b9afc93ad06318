"""The window-key budget (rtmh.windows.cardinality): what it admits, what it folds into
__other__, and that it decides alike on a retried batch (no server)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmh.ingest import metrics
from rtmh.records import GLOBAL_WINDOW_KEY, OTHER_WINDOW_KEY, DecodedRecord, Kind, MetricSample
from rtmh.windows.cardinality import (
    PER_BATCH_SETTING,
    PER_MINUTE_SETTING,
    KeyBudget,
    KeyGuard,
    Limits,
    fold_records,
    warning_text,
    windowed_services,
)
from rtmh.windows.partials import build_partials

T0 = 1_700_000_020.0  # 40 s into a minute


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def batch(budget: KeyBudget, ks: Sequence[str], now: float = T0) -> set[str]:
    """One committed batch: decide, settle; returns the folded keys."""
    folded = budget.decide(ks, now)
    budget.settle(ks)
    return folded


def never(_keys: Sequence[str]) -> Collection[str]:
    raise AssertionError("metrics_agg must not be asked")


# ---------------------------------------------------------------------------- the bounds


def test_new_keys_past_the_batch_bound_fold_first_met_first_served() -> None:
    budget = KeyBudget(Limits(per_batch=3, per_minute=100))
    assert budget.decide(["a", "b", "c", "d", "e"], T0) == {"d", "e"}
    settled = budget.settle(["a", "d", "d", "e", "b"])
    assert (settled.records, settled.keys, settled.examples) == (3, 2, ("d", "e"))
    assert settled.limits_hit == (PER_BATCH_SETTING,)


def test_a_key_folded_by_one_batch_may_enter_with_the_next() -> None:
    budget = KeyBudget(Limits(per_batch=2, per_minute=100))
    assert batch(budget, ["a", "b", "c"]) == {"c"}
    assert batch(budget, ["c", "a", "b"]) == set()


def test_a_minute_holds_at_most_its_bound_of_distinct_keys() -> None:
    budget = KeyBudget(Limits(per_batch=3, per_minute=5))
    assert batch(budget, keys("x", 3)) == set()
    assert batch(budget, keys("y", 3)) == {"y2"}
    settled_folded = budget.decide(keys("z", 3), T0 + 5)
    assert settled_folded == set(keys("z", 3))
    assert budget.settle(keys("z", 3)).limits_hit == (PER_MINUTE_SETTING,)


def test_known_keys_are_admitted_whatever_the_flood() -> None:
    budget = KeyBudget(Limits(per_batch=2, per_minute=4))
    assert batch(budget, ["checkout", "payments"]) == set()
    # this minute and the next: the flood folds, the known services never do
    for now in (T0 + 1, T0 + 30, T0 + 61):
        flood = keys(f"req{now}-", 50)
        assert budget.decide([*flood[:25], "checkout", *flood[25:], "payments"], now) >= set(
            flood[2:]
        )
        assert not {"checkout", "payments"} & budget.decide(["checkout", "payments"], now)
        budget.settle([])


def test_last_minutes_keys_keep_their_places_in_this_one() -> None:
    budget = KeyBudget(Limits(per_batch=10, per_minute=3))
    assert batch(budget, ["a", "b"], T0) == set()
    # next minute: a flood arrives before a and b; only one place is free for new keys
    assert batch(budget, ["x", "y", "z", "a", "b"], T0 + 60) == {"y", "z"}


def test_keys_are_forgotten_after_a_silent_minute() -> None:
    budget = KeyBudget(Limits(per_batch=1, per_minute=10))
    assert batch(budget, ["a"], T0) == set()
    assert batch(budget, ["b"], T0 + 60) == set()  # a stays known (previous minute)
    assert budget.decide(["c", "a", "d"], T0 + 60) == {"d"}
    budget.settle([])
    # two minutes on, with no batch in the minute between: neither a nor b is known
    assert batch(budget, ["a", "b"], T0 + 180) == {"b"}


def test_a_clock_stepped_back_stays_in_its_minute() -> None:
    budget = KeyBudget(Limits(per_batch=5, per_minute=2))
    assert batch(budget, ["a", "b"], T0) == set()
    assert batch(budget, ["c"], T0 - 120) == {"c"}


def test_synthetic_keys_are_never_folded_nor_counted() -> None:
    budget = KeyBudget(Limits(per_batch=1, per_minute=1))
    assert batch(budget, ["a"]) == set()
    assert batch(budget, [GLOBAL_WINDOW_KEY, OTHER_WINDOW_KEY, "b"]) == {"b"}
    assert batch(budget, [OTHER_WINDOW_KEY, "a"]) == set()


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Limits(per_batch=0, per_minute=10)


# ---------------------------------------------------------------------------- retries


def test_a_retried_batch_folds_alike_even_across_a_minute_boundary() -> None:
    budget = KeyBudget(Limits(per_batch=2, per_minute=100))
    ks = ["a", "b", "c", "d"]
    first = budget.decide(ks, T0 + 19.9)  # 59.9 s into the minute
    again = budget.decide(ks, T0 + 21.0)  # the retry, in the next minute
    assert first == again == {"c", "d"}


def test_parts_of_a_batch_fold_as_the_whole_did() -> None:
    # the ingest safety net retries a batch in parts, in an order of its own
    budget = KeyBudget(Limits(per_batch=2, per_minute=100))
    assert budget.decide(["a", "b", "c", "d"], T0) == {"c", "d"}
    assert budget.decide(["d", "b"], T0) == {"d"}
    assert budget.decide(["c", "a"], T0) == {"c"}


def test_parts_first_met_decide_once_for_the_whole_batch() -> None:
    budget = KeyBudget(Limits(per_batch=2, per_minute=100))
    assert budget.decide(["c", "d"], T0) == set()  # a first part; its keys take the budget
    assert budget.decide(["a", "b", "c", "d"], T0) == {"a", "b"}


def test_settle_counts_only_a_committed_batchs_records_once() -> None:
    budget = KeyBudget(Limits(per_batch=1, per_minute=100))
    for _attempt in range(3):
        budget.decide(["a", "b"], T0)
    settled = budget.settle(["a", "b", "b"])
    assert settled.records == 2
    assert budget.settle([]).records == 0


# ---------------------------------------------------------------------------- metrics_agg


def test_metrics_agg_is_asked_only_when_the_budget_cannot_take_every_unknown_key() -> None:
    budget = KeyBudget(Limits(per_batch=3, per_minute=100))
    assert budget.decide(["a", "b", "c"], T0, never) == set()
    budget.settle([])
    asked: list[list[str]] = []

    def lookup(ks: Sequence[str]) -> Collection[str]:
        asked.append(list(ks))
        return {"old1", "old2", "old3"} & set(ks)

    # a restarted / rebalanced worker: keys windowed recently are known, and take no budget
    folded = budget.decide(["old1", "n1", "old2", "n2", "old3", "n3", "n4", "a"], T0, lookup)
    assert folded == {"n4"}
    assert asked == [["old1", "n1", "old2", "n2", "old3", "n3", "n4"]]
    budget.settle([])
    assert budget.decide(["old1", "old2", "old3"], T0, never) == set()


def test_keys_found_in_metrics_agg_take_their_places_first() -> None:
    budget = KeyBudget(Limits(per_batch=10, per_minute=3))
    folded = budget.decide(["n1", "n2", "n3", "old"], T0, lambda ks: {"old"})
    assert folded == {"n3"}


# ---------------------------------------------------------------------------- warnings


def test_a_warning_at_most_once_a_minute() -> None:
    budget = KeyBudget(Limits(per_batch=1, per_minute=100))
    warns = []
    for now in (T0, T0 + 5, T0 + 10, T0 + 25, T0 + 30):
        budget.decide(keys(f"k{now}-", 3), now)
        warns.append(budget.settle([]).warn)
    assert warns == [True, False, False, True, False]
    budget.decide(["quiet"], T0 + 90)
    assert budget.settle([]).warn is False  # nothing folded: nothing to warn about


def test_the_warning_names_examples_the_bound_and_the_setting() -> None:
    budget = KeyBudget(Limits(per_batch=2, per_minute=1000))
    long_key = "req-" + "9" * 200
    budget.decide(["a", "b", long_key, *keys("req", 10)], T0)
    settled = budget.settle([long_key, "req1"])
    text = warning_text(settled, budget.limits)
    assert "RTMH_WINDOW_MAX_NEW_KEYS_PER_BATCH=2" in text
    assert "RTMH_WINDOW_MAX_KEYS_PER_MINUTE" not in text
    assert "2 records of 11 services" in text and "and 6 more" in text
    assert "req-999" in text and "9" * 100 not in text
    assert OTHER_WINDOW_KEY in text and "raw_events" in text


def test_the_guard_counts_folded_records_and_warns_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [T0]
    guard = KeyGuard(Limits(per_batch=2, per_minute=100), clock=lambda: now[0])
    before = metrics.WINDOW_KEYS_FOLDED._value.get()
    with caplog.at_level(logging.WARNING, logger="rtmh.windows.cardinality"):
        for step in range(3):
            recs = [log(f"s{step}-{i}") for i in range(5)]
            out = guard.fold(recs)
            guard.settle(recs)
            now[0] += 1
    assert sum(r.service == OTHER_WINDOW_KEY for r in out) == 3
    assert metrics.WINDOW_KEYS_FOLDED._value.get() - before == 9
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "s0-2" in warnings[0].getMessage()


# ---------------------------------------------------------------------------- records


def log(
    service: str, t: float = T0, *, error: bool = False, flags: tuple[str, ...] = ()
) -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.LOGS,
        data=f'{{"service": "{service}"}}',
        event_time=t,
        service=service,
        level="error" if error else "info",
        is_error=error,
        flags=flags,
    )


def metric(service: str, value: float, t: float = T0) -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.METRICS,
        data="{}",
        event_time=t,
        service=service,
        samples=(MetricSample("latency_ms", value),),
    )


def test_folding_replaces_the_service_only_and_copies_nothing_when_none_folds() -> None:
    recs = [log("a"), log("b"), metric("b", 3.0)]
    assert fold_records(recs, set()) is recs
    out = fold_records(recs, {"b"})
    assert [r.service for r in out] == ["a", OTHER_WINDOW_KEY, OTHER_WINDOW_KEY]
    assert [r.data for r in out] == [r.data for r in recs]
    assert out[0] is recs[0]


def test_records_out_of_the_windows_take_no_budget() -> None:
    recs = [log("late", flags=("ts_out_of_range",)), log("a"), log("a")]
    assert list(windowed_services(recs)) == ["a"]


def test_admitted_keys_and_the_global_key_stay_exact() -> None:
    recs = [log(f"s{i % 7}", T0 + i, error=i % 3 == 0) for i in range(60)]
    recs += [metric(f"s{i % 7}", float(i), T0 + i) for i in range(60)]
    guard = KeyGuard(Limits(per_batch=3, per_minute=100), clock=lambda: T0)
    folded = guard.fold(recs)
    exact = build_partials(recs)
    windows = build_partials(folded)
    admitted = {"s0", "s1", "s2"}
    assert {k[0] for k in windows} == admitted | {OTHER_WINDOW_KEY, GLOBAL_WINDOW_KEY}
    for key, partial in windows.items():
        if key[0] in admitted or key[0] == GLOBAL_WINDOW_KEY:
            want = exact[key]
            assert (partial.count, partial.sum, partial.min, partial.max) == (
                want.count,
                want.sum,
                want.min,
                want.max,
            )
    # __other__ holds what the folded services held, merged
    for metric_type, start in {(k[1], k[2]) for k in windows if k[0] == OTHER_WINDOW_KEY}:
        parts = [p for k, p in exact.items() if k[1:] == (metric_type, start)]
        lost = [p for p in parts if p.window_key not in admitted | {GLOBAL_WINDOW_KEY}]
        assert windows[(OTHER_WINDOW_KEY, metric_type, start)].count == sum(p.count for p in lost)


# ---------------------------------------------------------------------------- invariants


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[float, list[str]]]:
    """Batches (wall clock, keys) over a few minutes: steady services and floods of ids."""
    out = []
    now = T0
    for b in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from([0.2, 1.0, 15.0, 61.0, 130.0]))
        steady = draw(st.lists(st.sampled_from(keys("svc", 8)), max_size=8))
        flood = keys(f"id{b}-", draw(st.integers(0, 30)))
        ks = draw(st.permutations([*steady, *flood]))
        out.append((now, list(dict.fromkeys(ks))))
    return out


@settings(max_examples=150, deadline=None)
@given(traffic(), st.integers(1, 6), st.integers(1, 20))
def test_bounds_hold_and_known_keys_never_fold(
    batches: list[tuple[float, list[str]]], per_batch: int, per_minute: int
) -> None:
    budget = KeyBudget(Limits(per_batch, per_minute))
    admitted_in: dict[int, set[str]] = {}
    for now, ks in batches:
        minute = int(now // 60)
        known = admitted_in.get(minute, set()) | admitted_in.get(minute - 1, set())
        folded = budget.decide(ks, now)
        assert budget.decide(list(reversed(ks)), now + 0.1) == folded  # a retry
        admitted = set(ks) - folded
        assert not known & folded
        assert len(admitted - known) <= per_batch
        this_minute = admitted_in.setdefault(minute, set())
        # new keys enter only while the minute (with last minute's keys) has room
        assert len((this_minute | admitted) - admitted_in.get(minute - 1, set())) <= per_minute
        this_minute |= admitted
        budget.settle(ks)
        assert len(budget._current) <= per_minute and len(budget._previous) <= per_minute
        assert not budget._pending
