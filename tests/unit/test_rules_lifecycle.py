"""The incident state machine: pure transitions, no database."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from rtmh.records import INCIDENT_STATUSES, LIVE_STATUSES
from rtmh.rules.evaluate import Observation, evaluate_absence
from rtmh.rules.lifecycle import (
    UPDATE_INTERVAL_SECONDS,
    Close,
    Notify,
    Open,
    Reopen,
    Resolve,
    Transition,
    TransitionError,
    Update,
    apply_manual,
    current_state,
    fingerprint,
    idempotency_key,
    incident_title,
    live_notification,
    manual_transition,
    only_firing_changes,
    refresh_can_wait,
    refresh_only,
    step,
)
from rtmh.rules.model import (
    STATE_METADATA_FIELDS,
    IncidentState,
    Rule,
    WindowValue,
    validate_rule,
)

T0 = 1_714_564_800.0
KEY = "checkout"


def make_rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "id": 7,
        "name": "high_error_rate",
        "metric_type": "error_rate",
        "condition": ">",
        "threshold": 0.05,
        "resolve_after_seconds": 20,
        "repeat_interval_seconds": 1800,
        "channels": ["ops"],
    }
    fields.update(overrides)
    return validate_rule(fields)


def obs(
    rule: Rule,
    at: float,
    firing: bool | None,
    value: float | None = None,
    *,
    holding: bool | None = None,
    key: str = KEY,
) -> Observation:
    if holding is None:
        holding = firing
    wv = None
    if value is not None:
        wv = WindowValue(
            window_key=key,
            metric_type=rule.metric_type,
            window_start=at - 5,
            window_end=at + 55,
            value=value,
            count=100,
        )
    return Observation(
        rule_id=rule.id,
        window_key=key,
        at=at,
        firing=firing,
        holding=holding,
        observed=value,
        window=wv,
        reason=f"test verdict {firing}",
    )


def fire(rule: Rule, at: float, value: float = 0.3) -> Observation:
    return obs(rule, at, True, value)


def clear(rule: Rule, at: float, value: float = 0.01) -> Observation:
    return obs(rule, at, False, value)


def stored(t: Transition, incident_id: str = "inc-1") -> IncidentState:
    """What the DB layer would load back after persisting an Open."""
    assert t.state is not None
    return replace(t.state, id=incident_id) if t.state.id is None else t.state


def opened(rule: Rule, at: float = T0, value: float = 0.3) -> IncidentState:
    t = step(rule, None, fire(rule, at, value), at)
    assert Open() in t.actions
    return stored(t)


# --------------------------------------------------------------------------- state fields

# Columns of incidents (001_initial_schema.sql) that IncidentState mirrors.
INCIDENT_COLUMNS = {
    "id",
    "status",
    "fingerprint",
    "rule_id",
    "window_key",
    "first_seen",
    "last_seen",
    "peak_value",
    "last_value",
    "trigger_count",
    "resolved_at",
    "closed_at",
}


def test_every_state_field_is_a_column_or_metadata() -> None:
    state_fields = set(IncidentState.__struct_fields__)
    assert state_fields == INCIDENT_COLUMNS | set(STATE_METADATA_FIELDS)
    assert not INCIDENT_COLUMNS & set(STATE_METADATA_FIELDS)


# --------------------------------------------------------------------------- open


def test_opens_immediately_without_for() -> None:
    rule = make_rule()
    t = step(rule, None, fire(rule, T0, 0.31), T0)
    assert t.changed
    assert t.actions == (Open(), Notify("open", 1))
    assert t.notifications == (Notify("open", 1),)
    s = t.state
    assert s is not None
    assert (s.id, s.status, s.fingerprint, s.rule_id, s.window_key) == (
        None,
        "open",
        "7:checkout",
        7,
        KEY,
    )
    assert (s.first_seen, s.last_seen, s.last_notified_at) == (T0, T0, T0)
    assert (s.peak_value, s.last_value, s.trigger_count, s.notification_seq) == (0.31, 0.31, 1, 1)
    [entry] = t.timeline
    assert entry.event_type == "opened"
    assert entry.to_status == "open"
    assert entry.value == 0.31
    assert entry.actor == "rtmh"
    assert entry.details["reason"] == "test verdict True"
    assert entry.details["threshold"] == 0.05
    assert entry.details["count"] == 100
    assert entry.details["window_start"] == T0 - 5


def test_clear_and_no_verdict_do_nothing_without_incident() -> None:
    rule = make_rule()
    for o in (clear(rule, T0), obs(rule, T0, None)):
        t = step(rule, None, o, T0)
        assert t == Transition(state=None, changed=False)


def test_for_seconds_needs_a_continuous_run() -> None:
    rule = make_rule(for_seconds=60)
    t = step(rule, None, fire(rule, T0, 0.2), T0)
    pending = t.state
    assert pending is not None
    assert (pending.status, pending.id, pending.condition_true_since) == ("pending", None, T0)
    assert t.actions == () and t.timeline == ()
    # still firing, not long enough
    t = step(rule, pending, fire(rule, T0 + 59, 0.4), T0 + 59)
    assert t.state is not None and t.state.status == "pending"
    assert t.state.peak_value == 0.4
    # no verdict in between changes nothing
    assert step(rule, t.state, obs(rule, T0 + 59.5, None), T0 + 59.5).changed is False
    t = step(rule, t.state, fire(rule, T0 + 60, 0.3), T0 + 60)
    assert t.actions == (Open(), Notify("open", 1))
    assert t.state is not None
    assert t.state.first_seen == T0  # when it started, not when it opened
    assert t.state.peak_value == 0.4


def test_for_seconds_restarts_after_a_clear_verdict() -> None:
    rule = make_rule(for_seconds=60)
    pending = step(rule, None, fire(rule, T0), T0).state
    t = step(rule, pending, clear(rule, T0 + 30), T0 + 30)
    assert t == Transition(state=None, changed=True)
    t = step(rule, None, fire(rule, T0 + 40), T0 + 40)
    t = step(rule, t.state, fire(rule, T0 + 90), T0 + 90)
    assert t.state is not None and t.state.status == "pending"
    t = step(rule, t.state, fire(rule, T0 + 100), T0 + 100)
    assert Open() in t.actions


# --------------------------------------------------------------------------- live, resolve


def test_live_update_tracks_values() -> None:
    rule = make_rule()
    s = opened(rule, value=0.3)
    t = step(rule, s, fire(rule, T0 + 1, 0.4), T0 + 1)
    assert t.actions == (Update(),)
    assert t.timeline == ()
    assert t.state is not None
    assert (t.state.last_value, t.state.peak_value, t.state.last_seen) == (0.4, 0.4, T0 + 1)
    t = step(rule, t.state, fire(rule, T0 + 2, 0.35), T0 + 2)
    assert t.state is not None
    assert (t.state.last_value, t.state.peak_value) == (0.35, 0.4)


def test_no_verdict_keeps_a_live_incident_as_is() -> None:
    rule = make_rule(resolve_after_seconds=0)
    s = opened(rule)
    t = step(rule, s, obs(rule, T0 + 9999, None), T0 + 9999)
    assert t == Transition(state=s, changed=False)


def test_auto_resolve_after_resolve_after_seconds() -> None:
    rule = make_rule(resolve_after_seconds=20)
    s = opened(rule)
    t = step(rule, s, clear(rule, T0 + 10), T0 + 10)
    assert t.state is not None
    assert (t.state.status, t.state.clear_since) == ("open", T0 + 10)
    assert t.actions == (Update(),)
    t = step(rule, t.state, clear(rule, T0 + 29.9), T0 + 29.9)
    assert t.state is not None and t.state.status == "open"
    assert t.notifications == ()
    t = step(rule, t.state, clear(rule, T0 + 30), T0 + 30)
    assert t.actions == (Resolve(), Notify("resolve", 2))
    done = t.state
    assert done is not None
    assert (done.status, done.resolved_at, done.clear_since, done.id) == (
        "resolved",
        T0 + 30,
        None,
        "inc-1",
    )
    [entry] = t.timeline
    assert (entry.event_type, entry.from_status, entry.to_status) == (
        "resolved",
        "open",
        "resolved",
    )
    assert entry.details["clear_since"] == T0 + 10
    # resolved notifications exactly once
    for at in (T0 + 31, T0 + 60, T0 + 1000):
        t = step(rule, done, clear(rule, at), at)
        assert t.notifications == ()
        assert t.changed is False


def test_resolve_after_zero_resolves_on_first_clear() -> None:
    rule = make_rule(resolve_after_seconds=0)
    t = step(rule, opened(rule), clear(rule, T0 + 1), T0 + 1)
    assert Resolve() in t.actions


def test_investigating_incident_also_auto_resolves() -> None:
    rule = make_rule(resolve_after_seconds=0)
    s = replace(opened(rule), status="investigating")
    t = step(rule, s, clear(rule, T0 + 1), T0 + 1)
    assert t.timeline[0].from_status == "investigating"
    assert t.state is not None and t.state.status == "resolved"


def test_retrigger_while_clearing_cancels_resolve() -> None:
    rule = make_rule(resolve_after_seconds=20)
    s = opened(rule)
    t = step(rule, s, clear(rule, T0 + 10), T0 + 10)
    t = step(rule, t.state, fire(rule, T0 + 25), T0 + 25)
    s2 = t.state
    assert s2 is not None
    assert (s2.clear_since, s2.trigger_count, s2.condition_true_since) == (None, 2, T0 + 25)
    t = step(rule, s2, clear(rule, T0 + 35), T0 + 35)
    t = step(rule, t.state, clear(rule, T0 + 50), T0 + 50)
    assert t.state is not None and t.state.status == "open"  # only 15 s clear
    t = step(rule, t.state, clear(rule, T0 + 55), T0 + 55)
    assert t.state is not None and t.state.status == "resolved"


def test_hysteresis_keeps_the_incident_live() -> None:
    rule = make_rule(recovery_threshold=0.02, resolve_after_seconds=0)
    s = opened(rule, value=0.08)
    # 0.03 is below the threshold but above the recovery threshold: still live
    middle = obs(rule, T0 + 1, False, 0.03, holding=True)
    t = step(rule, s, middle, T0 + 1)
    assert t.state is not None
    assert (t.state.status, t.state.clear_since, t.state.last_seen) == ("open", None, T0 + 1)
    t = step(rule, t.state, obs(rule, T0 + 2, False, 0.01, holding=False), T0 + 2)
    assert t.state is not None and t.state.status == "resolved"


def test_hysteresis_clearing_needs_the_threshold_to_retrigger() -> None:
    rule = make_rule(recovery_threshold=0.02, resolve_after_seconds=20)
    s = opened(rule, value=0.08)
    t = step(rule, s, obs(rule, T0 + 1, False, 0.01, holding=False), T0 + 1)
    # back above the recovery threshold only: the clear period goes on
    t = step(rule, t.state, obs(rule, T0 + 5, False, 0.03, holding=True), T0 + 5)
    assert t.state is not None and t.state.clear_since == T0 + 1
    t = step(rule, t.state, obs(rule, T0 + 21, False, 0.03, holding=True), T0 + 21)
    assert t.state is not None and t.state.status == "resolved"


def test_hysteresis_does_not_apply_before_opening() -> None:
    rule = make_rule(recovery_threshold=0.02)
    t = step(rule, None, obs(rule, T0, False, 0.03, holding=True), T0)
    assert t.state is None


# --------------------------------------------------------------------------- reopen


def resolved(rule: Rule, at: float) -> IncidentState:
    s = opened(rule, at=at - 100)
    t = step(rule, s, clear(rule, at), at)
    assert t.state is not None and t.state.status == "resolved"
    return t.state


def test_reopen_within_the_reopen_period() -> None:
    rule = make_rule(resolve_after_seconds=0)
    s = resolved(rule, T0)
    t = step(rule, s, fire(rule, T0 + 299, 0.5), T0 + 299)
    assert t.actions == (Reopen(), Notify("open", 3))
    new = t.state
    assert new is not None
    assert (new.id, new.status, new.resolved_at, new.trigger_count) == ("inc-1", "open", None, 2)
    [entry] = t.timeline
    assert (entry.event_type, entry.from_status, entry.to_status) == (
        "reopened",
        "resolved",
        "open",
    )


def test_after_the_reopen_period_a_new_incident_opens() -> None:
    rule = make_rule(resolve_after_seconds=0)
    s = resolved(rule, T0)
    t = step(rule, s, fire(rule, T0 + 300), T0 + 300)
    assert t.actions == (Open(), Notify("open", 1))
    assert t.state is not None
    assert (t.state.id, t.state.trigger_count) == (None, 1)
    t = step(rule, s, fire(rule, T0 + 200), T0 + 200, reopen_seconds=100)
    assert Open() in t.actions


def test_reopen_respects_for_seconds() -> None:
    rule = make_rule(resolve_after_seconds=0, for_seconds=30)
    s = resolved(make_rule(resolve_after_seconds=0), T0)
    t = step(rule, s, fire(rule, T0 + 10), T0 + 10)
    assert t.changed and t.actions == ()
    assert t.state is not None
    assert (t.state.status, t.state.condition_true_since) == ("resolved", T0 + 10)
    # a clear verdict restarts the count
    t2 = step(rule, t.state, clear(rule, T0 + 20), T0 + 20)
    assert t2.state is not None and t2.state.condition_true_since is None
    t = step(rule, t.state, fire(rule, T0 + 40), T0 + 40)
    assert Reopen() in t.actions


def test_closed_incident_is_never_reopened() -> None:
    rule = make_rule()
    s = replace(opened(rule), status="closed", closed_at=T0 + 1)
    t = step(rule, s, fire(rule, T0 + 2), T0 + 2)
    assert Open() in t.actions
    assert t.state is not None and t.state.id is None


# --------------------------------------------------------------------------- notifications


def test_repeat_every_interval_while_live() -> None:
    rule = make_rule(repeat_interval_seconds=600)
    s = opened(rule)
    t = step(rule, s, fire(rule, T0 + 599), T0 + 599)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, T0 + 600), T0 + 600)
    assert t.notifications == (Notify("repeat", 2),)
    t = step(rule, t.state, fire(rule, T0 + 900), T0 + 900)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, T0 + 1200), T0 + 1200)
    assert t.notifications == (Notify("repeat", 3),)


def test_no_repeat_while_clearing() -> None:
    rule = make_rule(repeat_interval_seconds=10, resolve_after_seconds=1000)
    s = opened(rule)
    t = step(rule, s, clear(rule, T0 + 5), T0 + 5)
    t = step(rule, t.state, clear(rule, T0 + 50), T0 + 50)
    assert t.notifications == ()


#: the first moment an 'update' may follow the notification sent at T0
AFTER = T0 + UPDATE_INTERVAL_SECONDS


def test_update_notification_when_peak_grows_by_half() -> None:
    rule = make_rule()
    s = opened(rule, value=0.2)
    t = step(rule, s, fire(rule, AFTER, 0.29), AFTER)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, AFTER + 1, 0.3), AFTER + 1)
    assert t.notifications == (Notify("update", 2),)
    [entry] = t.timeline
    assert entry.event_type == "updated"
    assert entry.details["previous_peak"] == 0.2
    assert t.state is not None and t.state.notified_peak == 0.3
    # the next update needs 0.45, and another interval
    later = AFTER + 1 + UPDATE_INTERVAL_SECONDS
    t = step(rule, t.state, fire(rule, later, 0.44), later)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, later + 1, 0.45), later + 1)
    assert t.notifications == (Notify("update", 3),)


def test_update_notification_for_a_less_than_rule() -> None:
    rule = make_rule(metric_type="rps", condition="<", threshold=100)
    s = opened(rule, value=80.0)
    t = step(rule, s, fire(rule, AFTER, 50.0), AFTER)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, AFTER + 1, 40.0), AFTER + 1)
    assert t.notifications == (Notify("update", 2),)
    assert t.state is not None and t.state.peak_value == 40.0


def test_update_takes_precedence_over_repeat() -> None:
    rule = make_rule(repeat_interval_seconds=10)
    s = opened(rule, value=0.1)
    t = step(rule, s, fire(rule, T0 + 20, 0.9), T0 + 20)
    assert t.notifications == (Notify("update", 2),)


def test_a_burst_growing_right_after_the_page_pages_once() -> None:
    """The demo's case: open at 0.1, the burst reaches 0.35 a second later. One page, not two;
    the growth is reported once the interval has passed, if the incident is still live."""
    rule = make_rule()
    s = opened(rule, value=0.1)
    t = step(rule, s, fire(rule, T0 + 1, 0.35), T0 + 1)
    assert t.notifications == ()
    assert t.state is not None and t.state.peak_value == 0.35
    t = step(rule, t.state, fire(rule, AFTER - 1, 0.2), AFTER - 1)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, AFTER, 0.2), AFTER)
    assert t.notifications == (Notify("update", 2),)
    [entry] = t.timeline
    assert (entry.details["previous_peak"], entry.details["peak"]) == (0.1, 0.35)


def test_a_burst_that_resolves_within_the_interval_sends_open_and_resolve_only() -> None:
    rule = make_rule(resolve_after_seconds=5)
    state = opened(rule, value=0.1)
    sent = ["open"]
    for at, verdict in [(T0 + 1, fire(rule, T0 + 1, 0.9)), (T0 + 10, clear(rule, T0 + 10))]:
        t = step(rule, state, verdict, at)
        sent += [n.event for n in t.notifications]
        assert t.state is not None
        state = t.state
    t = step(rule, state, clear(rule, T0 + 15), T0 + 15)
    sent += [n.event for n in t.notifications]
    assert sent == ["open", "resolve"]


def test_the_update_interval_never_exceeds_the_repeat_interval() -> None:
    rule = make_rule(repeat_interval_seconds=60)
    s = opened(rule, value=0.1)
    t = step(rule, s, fire(rule, T0 + 30, 0.5), T0 + 30)
    assert t.notifications == ()
    t = step(rule, t.state, fire(rule, T0 + 60, 0.5), T0 + 60)
    assert t.notifications == (Notify("update", 2),)


def test_a_severity_change_is_news_at_once() -> None:
    rule = make_rule(severity="medium")
    s = opened(rule)
    assert s.notified_severity == "medium"
    worse_rule = replace(rule, severity="critical")
    t = step(worse_rule, s, fire(rule, T0 + 2), T0 + 2)
    assert t.notifications == (Notify("update", 2),)
    [entry] = t.timeline
    assert (entry.details["previous_severity"], entry.details["severity"]) == (
        "medium",
        "critical",
    )
    assert t.state is not None and t.state.notified_severity == "critical"
    # told once
    t = step(worse_rule, t.state, fire(rule, T0 + 3), T0 + 3)
    assert t.notifications == ()


def test_an_unknown_notified_severity_is_not_news() -> None:
    # incidents stored before notified_severity was recorded
    rule = make_rule(severity="high")
    s = replace(opened(rule), notified_severity=None)
    t = step(rule, s, fire(rule, T0 + 2), T0 + 2)
    assert t.notifications == ()


@pytest.mark.parametrize(
    ("since_last", "peak", "expected"),
    [
        (1.0, 0.3, None),  # nothing new
        (1.0, 0.9, None),  # grew, but right after the last page
        (UPDATE_INTERVAL_SECONDS, 0.44, None),  # moved, not past the step
        (UPDATE_INTERVAL_SECONDS, 0.45, "update"),
        (1800.0, 0.3, "repeat"),
        (1800.0, 0.9, "update"),
    ],
)
def test_live_notification_decides_what_is_news(
    since_last: float, peak: float, expected: str | None
) -> None:
    rule = make_rule(repeat_interval_seconds=1800)
    s = opened(rule, value=0.3)
    assert live_notification(rule, s, peak, T0 + since_last) == expected


def test_idempotency_keys() -> None:
    incident = uuid.UUID("2f1b0c56-8d55-4a07-9a61-2a8f4f5b9e10")
    key = idempotency_key(incident, "ops", "repeat", 3)
    assert key == "rtmh:2f1b0c56-8d55-4a07-9a61-2a8f4f5b9e10:ops:repeat:3"
    assert key == idempotency_key(str(incident), "ops", "repeat", 3)  # retries share it
    assert key != idempotency_key(incident, "ops", "repeat", 4)  # a later repeat does not
    assert key != idempotency_key(incident, "slack", "repeat", 3)
    with pytest.raises(ValueError):
        idempotency_key(incident, "ops", "open", 0)
    with pytest.raises(ValueError):
        idempotency_key(incident, "", "open", 1)


def test_fingerprint_and_title() -> None:
    rule = make_rule()
    assert fingerprint(7, "checkout") == "7:checkout"
    assert incident_title(rule, "checkout") == "high_error_rate on checkout"
    assert incident_title(rule, "__all__") == "high_error_rate on all services"


def test_step_rejects_foreign_state_or_observation() -> None:
    rule = make_rule()
    s = opened(rule)
    with pytest.raises(ValueError):
        step(rule, s, obs(rule, T0, True, 0.3, key="other"), T0)
    with pytest.raises(ValueError):
        step(make_rule(id=8), s, fire(rule, T0), T0)


# --------------------------------------------------------------------------- absence


def test_absence_incident_opens_and_resolves_when_data_returns() -> None:
    rule = make_rule(
        id=9,
        metric_type="log_count",
        aggregation="count",
        condition="<",
        threshold=1,
        min_count=0,
        no_data_seconds=120,
        resolve_after_seconds=0,
    )
    [(_, silent)] = evaluate_absence(rule, {"checkout": T0}, T0 + 130)
    t = step(rule, None, silent, T0 + 130)
    assert t.actions == (Open(), Notify("open", 1))
    assert t.timeline[0].details["silent_seconds"] == 130
    s = stored(t)
    [(_, still)] = evaluate_absence(rule, {"checkout": T0}, T0 + 200)
    assert step(rule, s, still, T0 + 200).notifications == ()
    [(_, back)] = evaluate_absence(rule, {"checkout": T0 + 205}, T0 + 206)
    t = step(rule, s, back, T0 + 206)
    assert t.actions == (Resolve(), Notify("resolve", 2))
    assert t.state is not None and t.state.last_value == 0.0  # no count while absent


# --------------------------------------------------------------------------- manual workflow

# Every (from, to) pair; True = allowed. Mirrors rtmh_guard_incident_status in 001, which also
# lets a row keep its status (NEW.status IS DISTINCT FROM OLD.status is false).
EXPECTED_ALLOWED: dict[tuple[str, str], bool] = {
    ("open", "open"): True,
    ("open", "investigating"): True,
    ("open", "resolved"): True,
    ("open", "closed"): True,
    ("investigating", "open"): False,
    ("investigating", "investigating"): True,
    ("investigating", "resolved"): True,
    ("investigating", "closed"): True,
    ("resolved", "open"): True,
    ("resolved", "investigating"): False,
    ("resolved", "resolved"): True,
    ("resolved", "closed"): True,
    ("closed", "open"): False,
    ("closed", "investigating"): False,
    ("closed", "resolved"): False,
    ("closed", "closed"): True,
}


def test_expected_table_covers_all_16_pairs() -> None:
    assert set(EXPECTED_ALLOWED) == set(itertools.product(INCIDENT_STATUSES, repeat=2))


@pytest.mark.parametrize(("pair", "allowed"), sorted(EXPECTED_ALLOWED.items()))
def test_manual_transition_table(pair: tuple[str, str], allowed: bool) -> None:
    if allowed:
        manual_transition(*pair)  # does not raise
    else:
        with pytest.raises(TransitionError, match=f"status change {pair[0]} -> {pair[1]}"):
            manual_transition(*pair)


@pytest.mark.parametrize(("a", "b"), [("pending", "open"), ("open", "acked"), ("", "closed")])
def test_manual_transition_unknown_status(a: str, b: str) -> None:
    with pytest.raises(TransitionError, match="unknown incident status"):
        manual_transition(a, b)


def test_apply_manual_investigating_sends_update() -> None:
    rule = make_rule()
    s = opened(rule)
    t = apply_manual(s, "investigating", T0 + 5, actor="alice", comment="looking")
    assert t.state is not None and t.state.status == "investigating"
    assert t.actions == (Update(), Notify("update", 2))
    [entry] = t.timeline
    assert (entry.event_type, entry.from_status, entry.to_status) == (
        "status_changed",
        "open",
        "investigating",
    )
    assert entry.actor == "alice"
    assert entry.details == {"actor": "alice", "comment": "looking"}


def test_apply_manual_resolve_then_close() -> None:
    rule = make_rule()
    s = opened(rule)
    t = apply_manual(s, "resolved", T0 + 5)
    assert t.actions == (Resolve(), Notify("resolve", 2))
    assert t.state is not None and t.state.resolved_at == T0 + 5
    t = apply_manual(t.state, "closed", T0 + 6)
    assert t.actions == (Close(),)  # the resolve was already notified
    assert t.state is not None and t.state.closed_at == T0 + 6
    with pytest.raises(TransitionError):
        apply_manual(t.state, "open", T0 + 7)


def test_apply_manual_close_from_open_notifies_resolve() -> None:
    t = apply_manual(opened(make_rule()), "closed", T0 + 5)
    assert t.actions == (Close(), Notify("resolve", 2))
    assert t.timeline[0].event_type == "closed"


def test_apply_manual_reopen_and_noop() -> None:
    rule = make_rule(resolve_after_seconds=0)
    s = resolved(rule, T0)
    t = apply_manual(s, "open", T0 + 1)
    assert t.actions == (Reopen(), Notify("open", 3))
    assert t.state is not None and t.state.resolved_at is None
    assert t.timeline[0].event_type == "reopened"
    assert apply_manual(s, "resolved", T0 + 1) == Transition(state=s, changed=False)
    pending = step(make_rule(for_seconds=10), None, fire(rule, T0), T0).state
    assert pending is not None
    with pytest.raises(TransitionError):
        apply_manual(pending, "open", T0)


def test_current_state_prefers_the_live_row_and_drops_stale_pending() -> None:
    rule = make_rule(for_seconds=60, resolve_after_seconds=0)
    live = opened(make_rule())
    pending = step(rule, None, fire(rule, T0 + 500), T0 + 500).state
    assert pending is not None
    assert current_state(None, None) is None
    assert current_state(live, pending) is live
    assert current_state(None, pending) is pending
    old = replace(live, status="resolved", resolved_at=T0 + 10)
    assert current_state(old, pending) is pending
    resolved_later = replace(old, resolved_at=T0 + 600)
    assert current_state(resolved_later, pending) is resolved_later


# --------------------------------------------------------------------------- property


@dataclass
class FakeDb:
    """The incidents table as the DB layer would keep it, with the checks of 001."""

    rows: dict[str, IncidentState] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    pending: IncidentState | None = None
    keys: set[str] = field(default_factory=set)

    def latest(self) -> IncidentState | None:
        return self.rows[self.order[-1]] if self.order else None

    def load(self) -> IncidentState | None:
        return current_state(self.latest(), self.pending)

    def live(self) -> list[IncidentState]:
        return [s for s in self.rows.values() if s.status in LIVE_STATUSES]

    def persist(self, before: IncidentState | None, t: Transition) -> None:
        for action in t.actions:
            event(f"action {type(action).__name__}")  # shown by --hypothesis-show-statistics
        new = t.state
        if not t.changed:
            assert new == before
            assert t.actions == () and t.timeline == ()
            return
        incident_id: str | None
        if new is None:
            assert before is not None and before.status == "pending"
            self.pending = None
            assert t.actions == ()
            return
        if new.status == "pending":
            assert new.id is None
            assert t.actions == () and t.timeline == ()
            self.pending = new
            return
        if new.id is None:
            assert Open() in t.actions
            assert not self.live(), "the unique index forbids a second live incident"
            incident_id = f"inc-{len(self.order) + 1}"
            self.rows[incident_id] = replace(new, id=incident_id)
            self.order.append(incident_id)
            self.pending = None
        else:
            incident_id = new.id
            old = self.rows[incident_id]
            manual_transition(old.status, new.status)  # what the DB trigger enforces
            assert new.notification_seq >= old.notification_seq
            self.rows[incident_id] = new
        assert len(self.live()) <= 1
        went_down = (
            before is not None
            and before.id == incident_id
            and before.status in LIVE_STATUSES
            and new.status not in LIVE_STATUSES
        )
        resolves = [n for n in t.notifications if n.event == "resolve"]
        assert len(resolves) == (1 if went_down else 0)
        assert len(t.notifications) <= 1
        for n in t.notifications:
            key = idempotency_key(incident_id, "ops", n.event, n.seq)
            assert key not in self.keys, "idempotency keys must be unique per occurrence"
            self.keys.add(key)


VERDICTS = {
    "none": (None, None),
    "clear": (False, False),
    "holding": (False, True),
    "firing": (True, True),
}

operation = st.one_of(
    st.tuples(
        st.just("obs"),
        st.floats(0, 400),
        st.sampled_from(sorted(VERDICTS)),
        st.floats(-1, 2),
    ),
    st.tuples(
        st.just("manual"), st.floats(0, 400), st.sampled_from(INCIDENT_STATUSES), st.just(0.0)
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    for_seconds=st.sampled_from([0, 5, 60]),
    resolve_after=st.sampled_from([0, 10, 60]),
    repeat=st.sampled_from([1, 100, 3600]),
    condition=st.sampled_from([">", "<", "!=", "=="]),
    reopen=st.sampled_from([0.0, 300.0]),
    ops=st.lists(operation, max_size=60),
)
def test_any_sequence_keeps_the_invariants(
    for_seconds: int,
    resolve_after: int,
    repeat: int,
    condition: str,
    reopen: float,
    ops: list[tuple[str, float, str, float]],
) -> None:
    rule = make_rule(
        condition=condition,
        threshold=0.5,
        for_seconds=for_seconds,
        resolve_after_seconds=resolve_after,
        repeat_interval_seconds=repeat,
    )
    db = FakeDb()
    now = T0
    for kind, dt, arg, value in ops:
        now += dt
        if kind == "obs":
            firing, holding = VERDICTS[arg]
            o = obs(rule, now, firing, None if firing is None else value, holding=holding)
            before = db.load()
            t = step(rule, before, o, now, reopen_seconds=reopen)
            if not firing and only_firing_changes(before):
                # the engine skips these verdicts without a transaction (rules.engine.apply)
                assert not t.changed
            db.persist(before, t)
        else:
            latest = db.latest()
            if latest is None:
                continue
            if not EXPECTED_ALLOWED[(latest.status, arg)]:
                with pytest.raises(TransitionError):
                    apply_manual(latest, arg, now)
                continue
            db.persist(latest, apply_manual(latest, arg, now))


# --------------------------------------------------------------------------- only_firing_changes


def test_only_a_firing_verdict_can_change_a_resolved_or_closed_incident() -> None:
    rule = make_rule(resolve_after_seconds=0)
    done = resolved(rule, T0)
    assert only_firing_changes(done) and only_firing_changes(None)
    assert only_firing_changes(replace(done, status="closed", closed_at=T0 + 1))
    for verdict in (clear(rule, T0 + 1), obs(rule, T0 + 1, None)):
        assert not step(rule, done, verdict, T0 + 1).changed
    assert step(rule, done, fire(rule, T0 + 1), T0 + 1).changed


def test_a_live_pending_or_reopening_incident_can_change_on_any_verdict() -> None:
    rule = make_rule(for_seconds=60, resolve_after_seconds=0)
    assert not only_firing_changes(opened(make_rule()))
    pending = step(rule, None, fire(rule, T0), T0).state
    assert pending is not None and pending.status == "pending"
    assert not only_firing_changes(pending)
    # resolved, and firing again for less than for_seconds: a clear verdict breaks that run
    done = resolved(make_rule(resolve_after_seconds=0), T0)
    reopening = step(rule, done, fire(rule, T0 + 1), T0 + 1).state
    assert reopening is not None and reopening.condition_true_since is not None
    assert not only_firing_changes(reopening)
    assert step(rule, reopening, clear(rule, T0 + 2), T0 + 2).changed


def test_a_refresh_within_the_refresh_period_can_wait_unless_it_brings_a_new_peak() -> None:
    rule = make_rule()
    live = opened(rule, value=0.3)  # last_seen T0
    assert refresh_can_wait(rule, live, fire(rule, T0 + 0.5, 0.3), T0 + 0.5)
    assert refresh_can_wait(rule, live, fire(rule, T0 + 0.5, 0.2), T0 + 0.5)
    # a new peak is written at once, and so is anything after the refresh period
    assert not refresh_can_wait(rule, live, fire(rule, T0 + 0.5, 0.4), T0 + 0.5)
    assert not refresh_can_wait(rule, live, fire(rule, T0 + 1, 0.3), T0 + 1)
    # a clear verdict starts the resolve countdown: never left out
    assert not refresh_can_wait(rule, live, clear(rule, T0 + 0.5), T0 + 0.5)
    assert not refresh_can_wait(
        rule, resolved(make_rule(resolve_after_seconds=0), T0), fire(rule, T0 + 0.5), T0 + 0.5
    )


def test_a_refresh_that_owes_a_notification_is_never_left_out() -> None:
    rule = make_rule(repeat_interval_seconds=1)
    live = opened(rule, value=0.3)
    later = replace(live, last_seen=T0 + 1.5)
    t = step(rule, later, fire(rule, T0 + 2, 0.3), T0 + 2)
    assert t.notifications, "the repeat is due"
    assert not refresh_can_wait(rule, later, fire(rule, T0 + 2, 0.3), T0 + 2)


# --------------------------------------------------------------------------- refresh_only


def test_a_live_incident_firing_again_is_only_a_refresh() -> None:
    rule = make_rule()
    live = opened(rule)
    t = step(rule, live, fire(rule, T0 + 5, 0.31), T0 + 5)
    assert t.changed and refresh_only(live, t)


def test_a_new_peak_without_news_is_still_only_a_refresh() -> None:
    rule = make_rule()
    live = opened(rule, value=0.3)
    t = step(rule, live, fire(rule, T0 + 5, 0.32), T0 + 5)
    assert t.state is not None and t.state.peak_value == 0.32
    assert refresh_only(live, t)


def test_what_a_responder_or_the_timeline_sees_is_never_only_a_refresh() -> None:
    rule = make_rule(resolve_after_seconds=20)
    live = opened(rule)
    # the first clear verdict starts the resolve countdown: clear_since is state, not a refresh
    clearing = step(rule, live, clear(rule, T0 + 5), T0 + 5)
    assert clearing.changed and not refresh_only(live, clearing)
    assert clearing.state is not None
    # firing again while clearing is a re-trigger
    again = step(rule, clearing.state, fire(rule, T0 + 6), T0 + 6)
    assert again.changed and not refresh_only(clearing.state, again)
    # resolving
    resolved = step(rule, clearing.state, clear(rule, T0 + 30), T0 + 30)
    assert Resolve() in resolved.actions and not refresh_only(clearing.state, resolved)
    # opening
    fresh = step(rule, None, fire(rule, T0), T0)
    assert not refresh_only(None, fresh)


def test_a_repeat_notification_is_not_only_a_refresh() -> None:
    rule = make_rule(repeat_interval_seconds=60)
    live = opened(rule)
    later = T0 + 61
    t = step(rule, live, fire(rule, later), later)
    assert t.notifications and not refresh_only(live, t)
