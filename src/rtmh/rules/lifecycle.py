"""The incident state machine: one pure transition per observation of one (rule, window_key).

Role in the flow: after evaluation (:mod:`rtmh.rules.evaluate`) the worker picks the state of the
fingerprint with :func:`current_state`, calls :func:`step`, and writes what the
:class:`Transition` says in one transaction:

- ``state``, when ``changed``: status "pending" goes to the pending store (it has no incidents
  row); an :class:`Open` action means INSERT the row (and use the returned id below); any other
  state with an id is an UPDATE of that row; None means forget the pending entry.
- ``timeline``: one incident_events row each.
- each :class:`Notify`: one alert_notifications row per channel of the rule, keyed by
  :func:`idempotency_key`.

The API calls :func:`apply_manual` for human status changes. Nothing here reads a clock or does
I/O: ``now`` is always a parameter, so the lifecycle is testable as a plain sequence of calls.

States of one fingerprint::

    (none) --firing--> pending --firing for for_seconds--> open (OPEN, notify open)
    open/investigating --holding--> same (UPDATE; notify update on news: see below,
                                          notify repeat every repeat_interval_seconds)
    open/investigating --clear for resolve_after_seconds--> resolved (RESOLVE, notify resolve)
    resolved --firing for for_seconds, within reopen_seconds of resolving--> open (REOPEN)
    resolved past reopen_seconds, or closed --firing--> a NEW incident (pending, then open)

A verdict of None (no usable data) changes nothing: it neither opens, nor resolves, nor delays.

One module over 500 lines on purpose: every transition of the state machine, automatic and
manual, reads in one place, next to the action types they share.

Notifications of a live incident follow Alertmanager's model, so one event pages once: 'update'
only when something a responder cares about changed since the last notification (the rule's
severity, at once; a peak :data:`UPDATE_GROWTH` worse, but no sooner than
:data:`UPDATE_INTERVAL_SECONDS` after the last notification, like ``group_interval``), and
'repeat' when nothing changed for ``repeat_interval_seconds`` (``repeat_interval``). A peak that
grew during the interval is reported when it ends, if the incident is still live.
"""

from __future__ import annotations

import math
import uuid
from typing import Final, Literal, TypeAlias, assert_never, cast

import msgspec
from msgspec.structs import replace

from rtmh.records import GLOBAL_WINDOW_KEY, INCIDENT_STATUSES, LIVE_STATUSES, IncidentStatus
from rtmh.rules.condition import worse
from rtmh.rules.evaluate import Observation
from rtmh.rules.model import IncidentState, Rule, WindowValue

__all__ = [
    "REFRESH_SECONDS",
    "REOPEN_SECONDS",
    "UPDATE_GROWTH",
    "UPDATE_INTERVAL_SECONDS",
    "Action",
    "Close",
    "Details",
    "Notify",
    "NotifyEvent",
    "Open",
    "Reopen",
    "Resolve",
    "TimelineEntry",
    "TimelineEventType",
    "Transition",
    "TransitionError",
    "Update",
    "apply_manual",
    "current_state",
    "fingerprint",
    "idempotency_key",
    "incident_title",
    "live_notification",
    "manual_transition",
    "only_firing_changes",
    "refresh_can_wait",
    "refresh_only",
    "step",
]

#: a recurrence this soon after a resolve reopens the same incident instead of opening a new one
REOPEN_SECONDS: Final = 300.0
#: an 'update' notification goes out when the peak got this much worse (0.5 = by half its size)
UPDATE_GROWTH: Final = 0.5
#: ... but no sooner than this after the last notification (Alertmanager's group_interval, whose
#: default this is): a burst that keeps growing in its first seconds pages once, not twice
UPDATE_INTERVAL_SECONDS: Final = 300.0

#: how stale a live incident's last_seen and last_value may get before a firing verdict that only
#: refreshes them is written (a new peak is written at once)
REFRESH_SECONDS: Final = 1.0

NotifyEvent: TypeAlias = Literal["open", "update", "repeat", "resolve"]
TimelineEventType: TypeAlias = Literal[
    "opened", "updated", "status_changed", "resolved", "reopened", "closed"
]
JsonScalar: TypeAlias = str | int | float | bool | None
#: incident_events.details: flat JSON, "why it changed"
Details: TypeAlias = dict[str, JsonScalar]

# The workflow of the DB trigger rtmh_guard_incident_status (001), status -> allowed targets.
_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "open": frozenset({"investigating", "resolved", "closed"}),
    "investigating": frozenset({"resolved", "closed"}),
    "resolved": frozenset({"open", "closed"}),
    "closed": frozenset(),
}


class TransitionError(ValueError):
    """A status change the incident workflow does not allow."""


class Open(msgspec.Struct, frozen=True, tag=True):
    """INSERT the incident row described by ``Transition.state`` (its id is None)."""


class Update(msgspec.Struct, frozen=True, tag=True):
    """A live incident's values (last/peak value, last_seen, counters) changed."""


class Resolve(msgspec.Struct, frozen=True, tag=True):
    """The incident went to 'resolved'."""


class Reopen(msgspec.Struct, frozen=True, tag=True):
    """A resolved incident went back to 'open'."""


class Close(msgspec.Struct, frozen=True, tag=True):
    """The incident went to 'closed' (manual only)."""


class Notify(msgspec.Struct, frozen=True, tag=True):
    """Queue one notification per rule channel; ``seq`` feeds :func:`idempotency_key`."""

    event: NotifyEvent
    seq: int


Action: TypeAlias = Open | Update | Resolve | Reopen | Close | Notify


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One incident_events row (the incident id is the caller's: it may not exist yet)."""

    event_type: TimelineEventType
    from_status: IncidentStatus | None = None
    to_status: IncidentStatus | None = None
    value: float | None = None
    details: Details
    actor: str = "rtmh"


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one :func:`step` or :func:`apply_manual`."""

    #: the fingerprint's state afterwards (None: nothing pending, no incident to track)
    state: IncidentState | None
    #: whether ``state`` differs from the input state (persist it only then)
    changed: bool
    actions: tuple[Action, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()

    @property
    def notifications(self) -> tuple[Notify, ...]:
        return tuple(a for a in self.actions if isinstance(a, Notify))


def fingerprint(rule_id: int, window_key: str) -> str:
    """Identity of "the incident of this rule on this key" (incidents.fingerprint)."""
    return f"{rule_id}:{window_key}"


def idempotency_key(
    incident_id: str | uuid.UUID, channel: str, event: NotifyEvent, seq: int
) -> str:
    """alert_notifications.idempotency_key of one notification of one incident to one channel.

    Every delivery attempt of that row reuses it, so receivers can deduplicate retries; a later
    notification (another repeat, a reopen's second 'open') has a new ``seq`` and so a new key.
    The parts cannot contain ':' (uuid, channel-name pattern, event word, integer), so the
    key is unambiguous.
    """
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    if not channel:
        raise ValueError("channel must not be empty")
    return f"rtmh:{incident_id}:{channel}:{event}:{seq}"


def incident_title(rule: Rule, window_key: str) -> str:
    """incidents.title for a new incident."""
    where = "all services" if window_key == GLOBAL_WINDOW_KEY else window_key
    return f"{rule.name} on {where}"


def current_state(
    latest: IncidentState | None, pending: IncidentState | None
) -> IncidentState | None:
    """The state to give :func:`step` for one fingerprint.

    ``latest`` is the fingerprint's newest incidents row, ``pending`` the pending-store entry.
    A live row always wins (the unique index allows only one). A pending entry counts only if it
    started after the row's last activity: a row that was reopened or resolved by hand in the
    meantime makes it stale (for_seconds then simply starts again).
    """
    if latest is not None and latest.status in LIVE_STATUSES:
        return latest
    if pending is not None and (latest is None or pending.first_seen > _last_activity(latest)):
        return pending
    return latest


def only_firing_changes(state: IncidentState | None) -> bool:
    """Whether no verdict but a firing one can change ``state``, a fingerprint's newest incident
    row (None: it has none): a resolved or closed row that is not on its way to reopening.
    :func:`step` leaves such a row as it is on a clear verdict, and on no data."""
    if state is None:
        return True
    return (
        state.status not in LIVE_STATUSES
        and state.status != "pending"
        and state.condition_true_since is None
    )


def refresh_can_wait(
    rule: Rule,
    state: IncidentState,
    obs: Observation,
    now: float,
    *,
    refresh_seconds: float = REFRESH_SECONDS,
) -> bool:
    """Whether writing ``obs`` can be left out: on a live incident whose row (``state``) was
    written less than ``refresh_seconds`` ago, it would only move last_seen and last_value (no
    new peak, status, timeline row or notification)."""
    if state.status not in LIVE_STATUSES or now - state.last_seen >= refresh_seconds:
        return False
    t = step(rule, state, obs, now)
    return t.state is not None and refresh_only(state, t) and t.state.peak_value == state.peak_value


def _last_activity(state: IncidentState) -> float:
    times = [t for t in (state.last_seen, state.resolved_at, state.closed_at) if t is not None]
    return max(times)


def manual_transition(status_from: str, status_to: str) -> None:
    """Check a status change against the workflow; raise :class:`TransitionError` if refused.

    Exactly the DB trigger rtmh_guard_incident_status: open -> investigating/resolved/closed,
    investigating -> resolved/closed, resolved -> open (reopen)/closed, nothing out of closed.
    Like the trigger, a "change" to the same status is accepted (it is no change).
    """
    for status in (status_from, status_to):
        if status not in _ALLOWED:
            raise TransitionError(
                f"unknown incident status {status!r}; expected one of "
                f"{', '.join(INCIDENT_STATUSES)}"
            )
    if status_from == status_to:
        return
    allowed = _ALLOWED[status_from]
    if status_to not in allowed:
        options = ", ".join(s for s in INCIDENT_STATUSES if s in allowed) or "nothing"
        raise TransitionError(
            f"status change {status_from} -> {status_to} is not allowed "
            f"(from {status_from}: {options})"
        )


def apply_manual(
    state: IncidentState,
    to_status: str,
    now: float,
    *,
    actor: str = "user",
    comment: str | None = None,
) -> Transition:
    """A human status change (API/CLI) as a :class:`Transition`, checked by manual_transition.

    Notifications: -> investigating sends 'update' (receivers learn someone is on it); leaving
    the live statuses (-> resolved, or -> closed from open/investigating) sends the one 'resolve';
    resolved -> open sends 'open'. Closing an already resolved incident notifies nothing.
    A manual reopen of a condition that is clear auto-resolves again after
    resolve_after_seconds, like any live incident.
    """
    if state.id is None or state.status == "pending":
        raise TransitionError("only a stored incident can change status")
    manual_transition(state.status, to_status)
    if to_status == state.status:
        return Transition(state=state, changed=False)
    source: IncidentStatus = state.status
    target = cast(IncidentStatus, to_status)
    details: Details = {"actor": actor}
    if comment:
        details["comment"] = comment
    seq = state.notification_seq + 1
    notified = replace(state, last_notified_at=now, notification_seq=seq)
    new: IncidentState
    actions: tuple[Action, ...]
    event_type: TimelineEventType
    match target:
        case "investigating":
            new = replace(notified, status=target)
            actions = (Update(), Notify("update", seq))
            event_type = "status_changed"
        case "resolved":
            new = replace(
                notified,
                status=target,
                resolved_at=now,
                clear_since=None,
                condition_true_since=None,
            )
            actions = (Resolve(), Notify("resolve", seq))
            event_type = "resolved"
        case "closed" if source in LIVE_STATUSES:
            new = replace(notified, status=target, closed_at=now)
            actions = (Close(), Notify("resolve", seq))
            event_type = "closed"
        case "closed":
            new = replace(state, status=target, closed_at=now)
            actions = (Close(),)
            event_type = "closed"
        case "open":
            new = replace(
                notified,
                status=target,
                resolved_at=None,
                clear_since=None,
                condition_true_since=None,
                notified_peak=state.peak_value,
            )
            actions = (Reopen(), Notify("open", seq))
            event_type = "reopened"
        case unreachable:
            assert_never(unreachable)
    entry = TimelineEntry(
        event_type=event_type,
        from_status=source,
        to_status=target,
        value=state.last_value,
        details=details,
        actor=actor,
    )
    return Transition(state=new, changed=True, actions=actions, timeline=(entry,))


def step(
    rule: Rule,
    state: IncidentState | None,
    obs: Observation,
    now: float,
    *,
    reopen_seconds: float = REOPEN_SECONDS,
    update_interval: float = UPDATE_INTERVAL_SECONDS,
) -> Transition:
    """Advance the incident of ``fingerprint(rule.id, obs.window_key)`` by one observation.

    - OPEN when the condition has fired continuously (no clear verdict in between) for
      ``for_seconds``; until then the state is "pending". first_seen is when it started firing.
    - While live: last_value/peak_value/last_seen are updated; with a recovery threshold the
      incident stays live while ``obs.holding``. Once a verdict is clear, ``clear_since`` is set
      and the incident resolves when verdicts stayed clear for ``resolve_after_seconds``; a
      firing verdict in between cancels that and counts as a re-trigger (trigger_count + 1).
    - Notifications (at most one per step): 'open' on open/reopen; 'update' when there is news
      (see :func:`live_notification`); otherwise 'repeat' when ``repeat_interval_seconds``
      passed since the last notification and the condition still holds; 'resolve' exactly once
      per resolution.
    - A resolved incident that fires again within ``reopen_seconds`` of resolved_at (and for
      ``for_seconds``) is reopened (trigger_count + 1); later, a new incident is started and
      the old row is left as it is (closing it is a human decision).
    """
    _check_inputs(rule, state, obs)
    if state is not None and state.status in LIVE_STATUSES:
        return _step_live(rule, state, obs, now, update_interval)
    if state is not None and state.status == "resolved" and _reopenable(state, now, reopen_seconds):
        return _step_resolved(rule, state, obs, now)
    return _step_idle(rule, state, obs, now)


def _check_inputs(rule: Rule, state: IncidentState | None, obs: Observation) -> None:
    if obs.rule_id != rule.id:
        raise ValueError(f"observation of rule {obs.rule_id} given with rule {rule.id}")
    if state is not None and state.fingerprint != fingerprint(rule.id, obs.window_key):
        raise ValueError(
            f"state {state.fingerprint!r} does not belong to rule {rule.id} on {obs.window_key!r}"
        )


def _reopenable(state: IncidentState, now: float, reopen_seconds: float) -> bool:
    # A resolved row without resolved_at (written by hand) cannot tell when: do not reopen it.
    return state.resolved_at is not None and now - state.resolved_at < reopen_seconds


def _step_idle(rule: Rule, state: IncidentState | None, obs: Observation, now: float) -> Transition:
    """No live incident: nothing, a pending state, a closed row or a too-old resolved row."""
    pending = state if state is not None and state.status == "pending" else None
    if obs.firing is None:
        return Transition(state=state, changed=False)
    if not obs.firing:
        if pending is None:
            return Transition(state=state, changed=False)
        # The run of firing verdicts is broken: for_seconds starts again next time.
        return Transition(state=None, changed=True)
    since = now
    if pending is not None and pending.condition_true_since is not None:
        since = pending.condition_true_since
    peak = _peak(rule, pending.peak_value if pending else None, obs.observed)
    if now - since >= rule.for_seconds:
        return _open(rule, obs, now, since, peak)
    new = IncidentState(
        id=None,
        status="pending",
        fingerprint=fingerprint(rule.id, obs.window_key),
        rule_id=rule.id,
        window_key=obs.window_key,
        first_seen=since,
        last_seen=now,
        condition_true_since=since,
        peak_value=peak,
        last_value=obs.observed,
    )
    return Transition(state=new, changed=new != state)


def _open(rule: Rule, obs: Observation, now: float, since: float, peak: float | None) -> Transition:
    new = IncidentState(
        id=None,
        status="open",
        fingerprint=fingerprint(rule.id, obs.window_key),
        rule_id=rule.id,
        window_key=obs.window_key,
        first_seen=since,
        last_seen=now,
        condition_true_since=since,
        last_notified_at=now,
        peak_value=peak,
        last_value=obs.observed,
        trigger_count=1,
        notified_peak=peak,
        notified_severity=rule.severity,
        notification_seq=1,
    )
    entry = TimelineEntry(
        event_type="opened",
        to_status="open",
        value=obs.observed,
        details=_details(rule, obs, condition_true_since=since),
    )
    return Transition(
        state=new, changed=True, actions=(Open(), Notify("open", 1)), timeline=(entry,)
    )


def _step_resolved(rule: Rule, state: IncidentState, obs: Observation, now: float) -> Transition:
    """A resolved incident still inside its reopen period."""
    if obs.firing is None:
        return Transition(state=state, changed=False)
    if not obs.firing:
        if state.condition_true_since is None:
            return Transition(state=state, changed=False)
        return Transition(state=replace(state, condition_true_since=None), changed=True)
    since = now if state.condition_true_since is None else state.condition_true_since
    if now - since < rule.for_seconds:
        new = replace(state, condition_true_since=since)
        return Transition(state=new, changed=new != state)
    seq = state.notification_seq + 1
    peak = _peak(rule, state.peak_value, obs.observed)
    new = replace(
        state,
        status="open",
        resolved_at=None,
        clear_since=None,
        condition_true_since=since,
        last_seen=now,
        last_value=obs.observed,
        peak_value=peak,
        trigger_count=state.trigger_count + 1,
        last_notified_at=now,
        notified_peak=obs.observed,
        notified_severity=rule.severity,
        notification_seq=seq,
    )
    entry = TimelineEntry(
        event_type="reopened",
        from_status="resolved",
        to_status="open",
        value=obs.observed,
        details=_details(rule, obs, condition_true_since=since),
    )
    return Transition(
        state=new, changed=True, actions=(Reopen(), Notify("open", seq)), timeline=(entry,)
    )


def _step_live(
    rule: Rule, state: IncidentState, obs: Observation, now: float, update_interval: float
) -> Transition:
    """An open or investigating incident."""
    if obs.firing is None:
        return Transition(state=state, changed=False)
    peak = _peak(rule, state.peak_value, obs.observed)
    last_value = state.last_value if obs.observed is None else obs.observed
    if state.clear_since is None:
        if obs.holding:
            return _still_live(rule, state, obs, now, peak, update_interval, retriggered=False)
        clear_since = now
    else:
        # Clearing: like a Schmitt trigger, only crossing the threshold itself (not merely the
        # recovery threshold) brings the condition back.
        if obs.firing:
            return _still_live(rule, state, obs, now, peak, update_interval, retriggered=True)
        clear_since = state.clear_since
    if now - clear_since >= rule.resolve_after_seconds:
        return _resolve(rule, state, obs, now, peak, last_value, clear_since)
    new = replace(
        state,
        clear_since=clear_since,
        condition_true_since=None,
        last_value=last_value,
        peak_value=peak,
    )
    changed = new != state
    return Transition(state=new, changed=changed, actions=(Update(),) if changed else ())


def _still_live(
    rule: Rule,
    state: IncidentState,
    obs: Observation,
    now: float,
    peak: float | None,
    update_interval: float,
    *,
    retriggered: bool,
) -> Transition:
    since = state.condition_true_since
    new = replace(
        state,
        last_seen=now,
        last_value=state.last_value if obs.observed is None else obs.observed,
        peak_value=peak,
        clear_since=None,
        condition_true_since=now if retriggered or since is None else since,
        trigger_count=state.trigger_count + (1 if retriggered else 0),
    )
    actions: list[Action] = [Update()] if new != state else []
    timeline: tuple[TimelineEntry, ...] = ()
    seq = state.notification_seq + 1
    event = live_notification(rule, state, peak, now, update_interval)
    if event is not None:
        new = replace(
            new, last_notified_at=now, notification_seq=seq, notified_severity=rule.severity
        )
        actions.append(Notify(event, seq))
    if event == "update":
        new = replace(new, notified_peak=peak)
        timeline = (
            TimelineEntry(
                event_type="updated",
                value=obs.observed,
                details=_details(rule, obs, **_news(rule, state, peak)),
            ),
        )
    return Transition(state=new, changed=new != state, actions=tuple(actions), timeline=timeline)


def refresh_only(before: IncidentState | None, t: Transition) -> bool:
    """Whether a transition only refreshes a live incident's running values (last_seen, last and
    peak value): no status, timeline row or notification, nothing a responder acts on."""
    if before is None or t.state is None or t.timeline or t.notifications:
        return False
    if before.status not in LIVE_STATUSES:
        return False
    kept = replace(
        t.state,
        last_seen=before.last_seen,
        last_value=before.last_value,
        peak_value=before.peak_value,
    )
    return kept == before


def live_notification(
    rule: Rule,
    state: IncidentState,
    peak: float | None,
    now: float,
    update_interval: float = UPDATE_INTERVAL_SECONDS,
) -> Literal["update", "repeat"] | None:
    """What the responders of a live incident should hear now, if anything.

    'update' when the rule's severity changed since the last notification (at once), or when
    the peak got :data:`UPDATE_GROWTH` worse than the last notified one and ``update_interval``
    (at most ``repeat_interval_seconds``) passed since the last notification; otherwise
    'repeat' once ``repeat_interval_seconds`` passed; otherwise nothing. Only values a responder
    acts on count: a peak that moved a little, or moved right after the page, is not news.
    """
    elapsed = now - _last_notified(state)
    if _severity_changed(rule, state):
        return "update"
    interval = min(update_interval, rule.repeat_interval_seconds)
    if _grew(rule, state.notified_peak, peak) and elapsed >= interval:
        return "update"
    if elapsed >= rule.repeat_interval_seconds:
        return "repeat"
    return None


def _severity_changed(rule: Rule, state: IncidentState) -> bool:
    # None: the incident predates the record of it; the next notification records it.
    return state.notified_severity is not None and state.notified_severity != rule.severity


def _news(rule: Rule, state: IncidentState, peak: float | None) -> Details:
    """incident_events.details of an 'updated' entry: what changed since the last notification."""
    news: Details = {"previous_peak": state.notified_peak, "peak": peak}
    if _severity_changed(rule, state):
        news.update(previous_severity=state.notified_severity, severity=rule.severity)
    return news


def _resolve(
    rule: Rule,
    state: IncidentState,
    obs: Observation,
    now: float,
    peak: float | None,
    last_value: float | None,
    clear_since: float,
) -> Transition:
    seq = state.notification_seq + 1
    new = replace(
        state,
        status="resolved",
        resolved_at=now,
        clear_since=None,
        condition_true_since=None,
        last_value=last_value,
        peak_value=peak,
        last_notified_at=now,
        notified_severity=rule.severity,
        notification_seq=seq,
    )
    entry = TimelineEntry(
        event_type="resolved",
        from_status=_status(state),
        to_status="resolved",
        value=obs.observed,
        details=_details(rule, obs, clear_since=clear_since, peak=peak),
    )
    return Transition(
        state=new, changed=True, actions=(Resolve(), Notify("resolve", seq)), timeline=(entry,)
    )


def _status(state: IncidentState) -> IncidentStatus:
    if state.status == "pending":
        raise ValueError("a pending state has no incident status")
    return state.status


def _last_notified(state: IncidentState) -> float:
    return state.first_seen if state.last_notified_at is None else state.last_notified_at


def _peak(rule: Rule, peak: float | None, observed: float | None) -> float | None:
    if observed is None:
        return peak
    if peak is None or worse(rule.condition, rule.threshold, observed, peak):
        return observed
    return peak


def _grew(rule: Rule, notified: float | None, peak: float | None) -> bool:
    """Whether the peak moved UPDATE_GROWTH of its own size past the last notified peak.

    Only for ordering conditions: for == and != there is no direction to grow in.
    """
    if notified is None or peak is None or rule.condition in ("==", "!="):
        return False
    growth = peak - notified if rule.condition in (">", ">=") else notified - peak
    margin = UPDATE_GROWTH * abs(notified)
    # isclose: 0.2 -> 0.3 is exactly 50 % even though 0.2 * 1.5 == 0.30000000000000004.
    return growth > 0 and (growth >= margin or math.isclose(growth, margin, rel_tol=1e-9))


def _details(rule: Rule, obs: Observation, **extra: JsonScalar) -> Details:
    """incident_events.details: the rule, the verdict and the window values behind it."""
    details: Details = {
        "rule": rule.name,
        "rule_id": rule.id,
        "window_key": obs.window_key,
        "metric_type": rule.metric_type,
        "aggregation": rule.aggregation,
        "condition": rule.condition,
        "threshold": rule.threshold,
        "recovery_threshold": rule.recovery_threshold,
        "observed": obs.observed,
        "reason": obs.reason,
        "evaluated_at": obs.at,
    }
    if obs.window is not None:
        details.update(_window_details(obs.window))
    if obs.last_data_at is not None:
        details["last_data_at"] = obs.last_data_at
        details["silent_seconds"] = round(obs.at - obs.last_data_at, 3)
    details.update(extra)
    return details


def _window_details(wv: WindowValue) -> Details:
    return {
        "window_start": wv.window_start,
        "window_end": wv.window_end,
        "count": wv.count,
        "value": _finite(wv.value),
        "sum": _finite(wv.sum),
        "min": _finite(wv.min),
        "max": _finite(wv.max),
        "p50": _finite(wv.p50),
        "p95": _finite(wv.p95),
        "p99": _finite(wv.p99),
    }


def _finite(x: float | None) -> float | None:
    # NaN/Infinity are not JSON: PostgreSQL would refuse the jsonb.
    return x if x is not None and math.isfinite(x) else None
