"""The rule backtest's pure replay (rtmh.service.backtest.replay) on plain WindowValues.

Windows here are 60 s sliding by 10 s, like the defaults; a window is judged at its close, so an
incident opens at the window_end of the first window that fires.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from msgspec.structs import replace

from rtmh.rules import evaluate as evaluate_module
from rtmh.rules import lifecycle
from rtmh.rules.evaluate import evaluate
from rtmh.rules.lifecycle import Open, current_state, step
from rtmh.rules.model import IncidentState, Rule, WindowValue, validate_rule
from rtmh.service import backtest
from rtmh.service.backtest import (
    MAX_SPAN,
    BacktestResult,
    check_range,
    replay,
    rule_from_definition,
)
from rtmh.service.errors import Invalid

T0 = 1_714_564_800.0  # 2024-05-01 12:00:00 UTC
SIZE, SLIDE = 60.0, 10.0
KEY = "checkout"
# a value per window start (seconds after T0); None: no window stored for that start
Shape = Callable[[float], float | None]


def make_rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "id": 7,
        "name": "high_error_rate",
        "metric_type": "error_rate",
        "condition": ">",
        "threshold": 0.05,
        "resolve_after_seconds": 20,
        "channels": ["ops"],
    }
    fields.update(overrides)
    return validate_rule(fields)


def windows(
    shape: Shape,
    *,
    key: str = KEY,
    metric_type: str = "error_rate",
    until: float = 1200.0,
    count: int = 100,
) -> list[WindowValue]:
    """The windows of one key starting every SLIDE in [T0, T0 + until)."""
    out = []
    offset = 0.0
    while offset < until:
        value = shape(offset)
        if value is not None:
            out.append(
                WindowValue(
                    window_key=key,
                    metric_type=metric_type,
                    window_start=T0 + offset,
                    window_end=T0 + offset + SIZE,
                    value=value,
                    count=count,
                    sum=value * count,
                )
            )
        offset += SLIDE
    return out


def burst(start: float, stop: float, high: float = 0.5, low: float = 0.01) -> Shape:
    """``high`` for windows starting in [start, stop), ``low`` elsewhere."""
    return lambda t: high if start <= t < stop else low


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, UTC)


def run(rule: Rule, ws: list[WindowValue], until: float = 1200.0) -> BacktestResult:
    return replay(rule, ws, at(0), at(until))


def test_a_burst_opens_at_the_first_firing_window_close_and_resolves_after_resolve_after() -> None:
    result = run(make_rule(), windows(burst(300, 400)))

    (incident,) = result.incidents
    assert incident.window_key == KEY
    assert incident.first_seen == incident.opened_at == at(360)  # window [300, 360) closes
    # the first clear window [400, 460) closes at 460; 20 s later is the close at 480
    assert incident.resolved_at == at(480)
    assert incident.peak_value == incident.open_value == 0.5
    assert "error_rate 0.5 > 0.05" in incident.open_reason
    assert (incident.trigger_count, incident.reopens) == (1, 0)
    assert incident.notifications == 2  # open, resolve
    summary = result.summary
    assert (summary.incidents, summary.live_at_end, summary.keys_matched) == (1, 0, 1)
    # windows starting in [0, 1200) that close by 1200: starts 0 .. 1140
    assert summary.windows_evaluated == 115
    assert summary.windows_without_verdict == 0
    assert (summary.start, summary.end, summary.rule) == (at(0), at(1200), "high_error_rate")


def test_for_seconds_delays_the_open_to_the_first_close_after_it() -> None:
    result = run(make_rule(for_seconds=35), windows(burst(300, 400)))

    (incident,) = result.incidents
    assert incident.first_seen == at(360)
    assert incident.opened_at == at(400)  # 360 + 35 = 395, on the 10-s grid: 400


def test_a_burst_shorter_than_for_seconds_opens_nothing() -> None:
    assert run(make_rule(for_seconds=60), windows(burst(300, 340))).incidents == ()


def test_min_count_gates_thin_windows() -> None:
    thin = windows(lambda t: 1.0, count=5)

    gated = run(make_rule(), thin)
    assert gated.incidents == ()
    assert gated.summary.windows_without_verdict == gated.summary.windows_evaluated == 115

    (incident,) = run(make_rule(min_count=5), thin).incidents
    assert incident.opened_at == at(60)


def test_a_thin_window_neither_opens_nor_resolves() -> None:
    def shape(t: float) -> float | None:
        return 0.5 if 300 <= t < 400 else 0.0

    ws = [replace(w, count=3) if w.window_start >= T0 + 400 else w for w in windows(shape)]
    (incident,) = run(make_rule(), ws).incidents
    assert incident.resolved_at is None  # every window after the burst is thin: no verdict


def test_recovery_threshold_keeps_the_incident_live_while_still_crossed() -> None:
    def shape(t: float) -> float:
        if 300 <= t < 400:
            return 0.2  # fires
        if 400 <= t < 600:
            return 0.07  # below the threshold, above the recovery threshold
        return 0.01

    plain = run(make_rule(threshold=0.1), windows(shape))
    hysteresis = run(make_rule(threshold=0.1, recovery_threshold=0.05), windows(shape))

    assert plain.incidents[0].resolved_at == at(480)
    (incident,) = hysteresis.incidents
    assert incident.opened_at == at(360)
    # first window under 0.05: [600, 660) closes at 660; resolved 20 s later
    assert incident.resolved_at == at(680)
    assert incident.peak_value == 0.2


def test_a_key_the_pattern_does_not_select_is_ignored() -> None:
    ws = windows(burst(300, 400), key="payments") + windows(burst(600, 700), key="checkout-eu")
    result = run(make_rule(window_key_pattern="checkout*"), ws)

    assert [i.window_key for i in result.incidents] == ["checkout-eu"]
    assert result.summary.keys_matched == 1
    assert result.summary.windows_evaluated == 115


@pytest.mark.parametrize(
    ("pattern", "keys"),
    [
        ("*", ["checkout"]),
        ("?*", ["checkout"]),
        ("__all__", ["__all__"]),
        ("__*", ["__all__", "__other__"]),
    ],
)
def test_synthetic_keys_only_for_a_pattern_starting_with_two_underscores(
    pattern: str, keys: list[str]
) -> None:
    ws = (
        windows(burst(300, 400), key="checkout")
        + windows(burst(300, 400), key="__all__")
        + windows(burst(300, 400), key="__other__")
    )
    result = run(make_rule(window_key_pattern=pattern), ws)
    assert sorted(i.window_key for i in result.incidents) == keys


def test_a_burst_still_live_at_the_end_has_no_resolved_at() -> None:
    result = run(make_rule(), windows(burst(1000, 2000)))

    (incident,) = result.incidents
    assert incident.opened_at == at(1060)
    assert incident.resolved_at is None
    assert result.summary.live_at_end == 1


def test_windows_closing_after_the_range_are_not_judged() -> None:
    # the burst's windows start before the end but close after it
    assert run(make_rule(), windows(burst(1150, 1300), until=1300)).incidents == ()


def test_a_recurrence_within_the_reopen_period_reopens_and_later_opens_a_new_incident() -> None:
    def shape(t: float) -> float:
        in_burst = 100 <= t < 200 or 300 <= t < 400 or 900 <= t < 1000
        return 0.5 if in_burst else 0.01

    result = run(make_rule(), windows(shape, until=1800), until=1800)

    first, second = result.incidents
    assert (first.opened_at, first.resolved_at) == (at(160), at(480))
    assert (first.reopens, first.trigger_count) == (1, 2)
    assert first.notifications == 4  # open, resolve, open, resolve
    # resolved at 480; the burst at 900 fires at 960, past REOPEN_SECONDS (300): a new incident
    assert (second.opened_at, second.resolved_at) == (at(960), at(1080))
    assert second.reopens == 0


def test_a_key_that_goes_silent_resolves_as_the_engines_tick_would() -> None:
    # the service dies during the burst: no windows start after 390
    result = run(make_rule(), windows(lambda t: 0.5 if t >= 300 else 0.01, until=400))

    (incident,) = result.incidents
    assert incident.opened_at == at(360)
    # the last window [390, 450) closes at 450 and nothing covers 450: cleared then, resolved
    # resolve_after_seconds later, though no window closes at 470
    assert incident.resolved_at == at(470)


def test_silence_shorter_than_resolve_after_does_not_resolve() -> None:
    # windows starting in [460, 520) are missing: the key is silent from 510 until 520
    def shape(t: float) -> float | None:
        return None if 460 <= t < 520 else 0.5

    (incident,) = run(make_rule(resolve_after_seconds=30), windows(shape)).incidents
    assert incident.resolved_at is None
    assert incident.trigger_count == 2  # cleared at 510, fired again at the close at 580


def test_a_pending_incident_is_dropped_when_the_key_goes_silent() -> None:
    result = run(make_rule(for_seconds=60), windows(lambda t: 0.5, until=20))
    assert result.incidents == ()


def test_a_disabled_rule_is_replayed_as_if_enabled() -> None:
    result = run(make_rule(enabled=False), windows(burst(300, 400)))
    assert len(result.incidents) == 1


def test_an_absence_rule_is_refused() -> None:
    rule = make_rule(aggregation="count", condition="<", threshold=1, no_data_seconds=60)
    with pytest.raises(Invalid) as err:
        run(rule, windows(burst(300, 400)))
    assert err.value.field == "rule.no_data_seconds"


def test_other_metric_types_and_windows_outside_the_range_are_ignored() -> None:
    noise = [
        *windows(lambda t: 9.0, metric_type="error_count"),
        WindowValue(
            window_key=KEY,
            metric_type="error_rate",
            window_start=T0 - 30,
            window_end=T0 + 30,
            value=0.9,
            count=100,
        ),
    ]
    result = run(make_rule(), windows(burst(300, 400)) + noise)
    assert [i.opened_at for i in result.incidents] == [at(360)]
    assert result.summary.windows_evaluated == 115


def test_the_result_does_not_depend_on_the_order_of_the_windows() -> None:
    ws = [
        w
        for key, start in (("a", 100), ("b", 300), ("c", 300), ("__all__", 500))
        for w in windows(burst(start, start + 150), key=key)
    ]
    rule = make_rule(window_key_pattern="*")
    expected = run(rule, ws)
    rng = random.Random(4)
    for _ in range(5):
        rng.shuffle(ws)
        assert run(rule, ws) == expected
    # ordered by opened_at, then key
    assert [i.window_key for i in expected.incidents] == ["a", "b", "c"]


def test_the_result_is_json_ready() -> None:
    result = run(make_rule(), windows(burst(300, 400)))
    data = msgspec.json.decode(msgspec.json.encode(result))
    assert data["summary"]["incidents"] == 1
    assert data["incidents"][0]["opened_at"] == "2024-05-01T12:06:00Z"


def test_the_replay_uses_the_engines_own_functions() -> None:
    # the replay must not carry a second copy of the evaluation or the state machine
    names = vars(backtest)
    assert names["evaluate"] is evaluate_module.evaluate
    assert names["step"] is lifecycle.step
    assert names["current_state"] is lifecycle.current_state


def engine_by_hand(rule: Rule, ws: list[WindowValue]) -> list[tuple[float, float | None]]:
    """(opened_at, resolved_at) of each incident: evaluate + current_state + step, window by
    window in close order, bookkeeping as RuleEngine._apply_once does."""
    latest: IncidentState | None = None
    pending: IncidentState | None = None
    opened: list[float] = []
    resolved: dict[float, float | None] = {}
    for w in sorted(ws, key=lambda w: w.window_end):
        if w.window_end > T0 + 1200:
            continue
        now = w.window_end
        t = step(rule, current_state(latest, pending), evaluate(rule, [w], now), now)
        if not t.changed:
            continue
        if t.state is None or t.state.status == "pending":
            pending = t.state
            continue
        pending, latest = None, t.state
        if any(isinstance(a, Open) for a in t.actions):
            opened.append(now)
        resolved[opened[-1]] = latest.resolved_at if latest.status == "resolved" else None
    return [(o, resolved[o]) for o in opened]


@pytest.mark.parametrize("seed", range(20))
def test_the_replay_equals_the_engines_functions_called_step_by_step(seed: int) -> None:
    rng = random.Random(seed)
    rule = make_rule(
        for_seconds=rng.choice([0, 15, 30]),
        resolve_after_seconds=rng.choice([0, 20, 45]),
        recovery_threshold=rng.choice([None, 0.03]),
        min_count=rng.choice([0, 20]),
    )
    ws = [
        replace(w, count=rng.choice([5, 50, 100]))
        for w in windows(lambda t: rng.choice([0.0, 0.01, 0.04, 0.06, 0.3]))
    ]

    result = run(rule, ws)

    got = [
        (i.opened_at.timestamp(), None if i.resolved_at is None else i.resolved_at.timestamp())
        for i in result.incidents
    ]
    assert got == engine_by_hand(rule, ws)


def test_check_range_refuses_what_cannot_be_replayed() -> None:
    now = at(10_000)
    with pytest.raises(Invalid, match="time zone") as naive:
        check_range(datetime(2024, 5, 1), at(100), now)
    assert naive.value.field == "start"
    with pytest.raises(Invalid) as backwards:
        check_range(at(100), at(100), now)
    assert backwards.value.field == "end"
    with pytest.raises(Invalid, match="7 days") as long:
        check_range(at(0), at(0) + MAX_SPAN + timedelta(seconds=1), at(0) + 2 * MAX_SPAN)
    assert long.value.field == "start"
    with pytest.raises(Invalid, match="past"):
        check_range(at(20_000), at(30_000), now)
    # a range reaching into the future stops now: later windows are still filling
    assert check_range(at(0), at(50_000), now) == (at(0), now)
    assert check_range(at(0), at(3600), now) == (at(0), at(3600))


def test_rule_from_definition_names_the_field_inside_the_rule() -> None:
    with pytest.raises(Invalid) as err:
        rule_from_definition({"name": "x", "metric_type": "error_rate", "condition": ">"})
    assert err.value.field == "rule.threshold"
    with pytest.raises(Invalid) as not_object:
        rule_from_definition(["x"])
    assert not_object.value.field == "rule"
    rule = rule_from_definition(
        {"name": "x", "metric_type": "error_rate", "condition": ">", "threshold": 0.1}
    )
    assert rule.id == 0 and rule.threshold == 0.1
