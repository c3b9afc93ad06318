"""Rule backtest: when would this rule have opened and resolved incidents over the stored windows.

Role in the flow: ``POST /api/v1/rules/backtest`` and ``rtmh rules backtest`` call
:func:`run_backtest` with a saved rule (:func:`load_saved_rule`) or an unsaved definition
(:func:`rule_from_definition`). It reads the rule's metric type from ``metrics_agg``
(db/queries/backtest.sql) and hands the rows to :func:`replay`, a pure function that drives the
engine's own pure functions (:func:`rtmh.rules.evaluate.evaluate` for the verdicts,
:func:`rtmh.rules.lifecycle.current_state` and :func:`~rtmh.rules.lifecycle.step` for the
incident of each (rule, window_key)), so for_seconds, min_count, resolve_after_seconds,
recovery_threshold and reopening within REOPEN_SECONDS behave exactly as live. Nothing is
written: the incidents are what the engine would have stored, never rows.

A backtest is as of window close. The live engine judges windows while they fill; a stored row
holds only the final values, so each window is judged once, at its window_end. Detection can
therefore be later than live by up to the window's length, times fall on the slide's grid, and
the thin early state of a window (what live saw in its first seconds) is not visible.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from msgspec.structs import replace
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.records import LIVE_STATUSES
from rtmh.rules.evaluate import Observation, evaluate, evaluate_silent, matches
from rtmh.rules.lifecycle import Notify, Open, Reopen, current_state, fingerprint, step
from rtmh.rules.model import IncidentState, Rule, RuleError, WindowValue, validate_rule
from rtmh.rules.store import window_from_row
from rtmh.service.errors import Conflict, Invalid, NotFound

__all__ = [
    "MAX_SPAN",
    "MAX_WINDOWS",
    "BacktestIncident",
    "BacktestResult",
    "BacktestSummary",
    "check_range",
    "load_saved_rule",
    "replay",
    "rule_from_definition",
    "run_backtest",
]

SQL = load("backtest")
# saved rules are read as the API reads them
RULES_SQL = load("rule_admin")

#: the longest range one backtest may cover
MAX_SPAN: Final = timedelta(days=7)
#: ... and the most windows it may read: the replay costs ~20 us a window (most of it the verdict's
#: reason text), so this bounds one request to a few seconds. A week of 10-s windows is 60,480
#: per key: 20 services fit about a day, one service a week.
MAX_WINDOWS: Final = 200_000
# fnmatch's special characters: a pattern without them selects one key, read by its index
_GLOB: Final = frozenset("*?[")

# Event order at one instant: a window's verdict before a silence check of the same key, as live
# (the batch judged the window while it filled; the tick found nothing current at its close).
_CLOSE: Final = 0
_SILENCE: Final = 1


@dataclass(frozen=True, slots=True)
class BacktestIncident:
    """One incident the engine would have opened (reopens of it included)."""

    window_key: str
    #: when the condition started firing (for_seconds counts from here): incidents.first_seen
    first_seen: datetime
    #: when the incident would have been opened (first_seen + for_seconds, on the window grid)
    opened_at: datetime
    #: its last resolution; None when it is still live at the end of the range
    resolved_at: datetime | None
    #: the worst value while it was live
    peak_value: float | None
    #: the verdict that opened it
    open_value: float | None
    open_reason: str
    #: incidents.trigger_count: 1 at open, +1 per reopen or re-trigger while clearing
    trigger_count: int
    #: times it was resolved and reopened within the reopen period
    reopens: int
    #: notifications the engine would have queued (open/update/repeat/resolve), each to every
    #: channel of the rule
    notifications: int


@dataclass(frozen=True, slots=True)
class BacktestSummary:
    rule: str
    #: the range replayed: windows lying wholly inside [start, end) are judged; end is the one
    #: asked for, or the time of the query when that was earlier
    start: datetime
    end: datetime
    #: windows of the rule's metric type and keys that were judged
    windows_evaluated: int
    #: ... of which gave no verdict (e.g. fewer than min_count events): they neither open nor
    #: resolve anything
    windows_without_verdict: int
    #: window keys the pattern selected that had windows in the range
    keys_matched: int
    incidents: int
    #: incidents still live at the end of the range
    live_at_end: int


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """What :func:`run_backtest` returns; JSON-ready through ``msgspec.to_builtins``."""

    summary: BacktestSummary
    #: ordered by opened_at, then window_key
    incidents: tuple[BacktestIncident, ...]


# --- input ------------------------------------------------------------------------------------
def rule_from_definition(fields: object, field_name: str = "rule") -> Rule:
    """An unsaved rule from its definition (API body, YAML file), checked by validate_rule.

    Raises :class:`Invalid` naming the field as ``<field_name>.<rule field>``.
    """
    if not isinstance(fields, Mapping):
        raise Invalid(field_name, f"must be an object, got {type(fields).__name__}")
    try:
        return validate_rule(fields)
    except RuleError as err:
        raise Invalid(f"{field_name}.{err.field}", err.problem) from None


def check_range(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The range to replay, ``end`` clamped to ``now``; :class:`Invalid` naming the bad field.

    Windows closing after ``now`` are still filling: judging them would judge half a window.
    """
    for name, moment in (("start", start), ("end", end)):
        if moment.utcoffset() is None:
            raise Invalid(name, f"needs a time zone, got {moment.isoformat()}")
    if start >= end:
        raise Invalid("end", f"must be after start ({start.isoformat()}), got {end.isoformat()}")
    if end - start > MAX_SPAN:
        span = end - start
        raise Invalid("start", f"the range may span at most {MAX_SPAN.days} days, got {span}")
    if start >= now:
        raise Invalid("start", f"must be in the past, got {start.isoformat()}")
    return start, min(end, now)


def _check_rule(rule: Rule) -> Rule:
    """The rule as the replay runs it.

    Absence rules are refused: their verdicts come from how long a key has been silent, not from
    window values, so they depend on data before the range (a service that went quiet before
    ``start`` and stayed quiet is exactly what they page on, and the range would show nothing)
    and on the engine's one-second tick; a replay over stored windows would be wrong where it
    matters most. A disabled rule is replayed as if enabled: "what would it have done" is the
    question people ask before enabling one.
    """
    if rule.no_data_seconds is not None:
        raise Invalid(
            "rule.no_data_seconds",
            "absence rules cannot be backtested: they fire on silence, which stored windows do "
            "not show inside the range (a key silent since before it would never appear)",
        )
    return rule if rule.enabled else replace(rule, enabled=True)


# --- the pure replay --------------------------------------------------------------------------
@dataclass(slots=True)
class _Draft:
    """One incident being replayed; ``state`` is its newest engine state."""

    state: IncidentState
    opened_at: float
    open_value: float | None
    open_reason: str
    reopens: int = 0
    notifications: int = 0


@dataclass(slots=True)
class _Track:
    """What the engine keeps per fingerprint: the newest incident row and the pending entry."""

    latest: IncidentState | None = None
    pending: IncidentState | None = None
    draft: _Draft | None = None


@dataclass(slots=True)
class _Coverage:
    """When one key had data: its windows' starts, sorted, with the running max of their ends.

    The engine's tick treats a key with no window covering ``now`` as cleared; a window covers
    ``t`` when start <= t < end.
    """

    starts: list[float]
    max_ends: list[float]
    #: the longest window, for the verdict's reason
    size: float

    @classmethod
    def of(cls, windows: list[WindowValue]) -> _Coverage:
        ordered = sorted(windows, key=lambda w: w.window_start)
        ends = itertools.accumulate((w.window_end for w in ordered), max)
        size = max(w.window_end - w.window_start for w in ordered)
        return cls([w.window_start for w in ordered], list(ends), size)

    def covered(self, t: float) -> bool:
        i = bisect.bisect_right(self.starts, t)
        return i > 0 and self.max_ends[i - 1] > t


def replay(
    rule: Rule, windows: Iterable[WindowValue], start: datetime, end: datetime
) -> BacktestResult:
    """Replay ``rule`` over the stored windows of its metric type; see the module docstring.

    ``windows`` may hold any keys and types in any order; those of the rule's metric type whose
    key the rule selects and that start in [start, end) are used. Each one that closes by
    ``end`` is judged at its window_end (in time order, keys sorted within one instant); a key
    with a live or pending incident and no window covering the moment is judged cleared, as the
    engine's tick does when traffic stops. Raises :class:`Invalid` for an absence rule (see
    :func:`_check_rule`).
    """
    rule = _check_rule(rule)
    t0, t1 = start.timestamp(), end.timestamp()
    by_key = _select(rule, windows, t0, t1)
    coverage = {key: _Coverage.of(ws) for key, ws in by_key.items()}
    closing = _by_close(by_key, t1)
    # (time, phase, key): deterministic order across keys; silence checks join as they are due
    events: list[tuple[float, int, str]] = [(t, _CLOSE, "") for t in closing]
    heapq.heapify(events)
    tracks: dict[str, _Track] = {}
    drafts: list[_Draft] = []
    judged = without_verdict = 0
    while events:
        now, phase, silent = heapq.heappop(events)
        if phase == _CLOSE:
            group = closing[now]
            for key in sorted(group):
                # what evaluate_all does per key, without its grouping and pattern match: the
                # windows are grouped and matched once above
                obs = evaluate(rule, group[key], now)
                judged += len(group[key])
                without_verdict += obs.firing is None
                track = tracks.setdefault(key, _Track())
                _apply(rule, track, obs, now, drafts)
                if not coverage[key].covered(now):
                    heapq.heappush(events, (now, _SILENCE, key))
        else:
            due = _silence_check(rule, tracks[silent], coverage[silent], silent, now, t1, drafts)
            if due is not None:
                heapq.heappush(events, (due, _SILENCE, silent))
    incidents = sorted(
        (_finish(d) for d in drafts), key=lambda i: (i.opened_at, i.window_key, i.first_seen)
    )
    summary = BacktestSummary(
        rule=rule.name,
        start=start,
        end=end,
        windows_evaluated=judged,
        windows_without_verdict=without_verdict,
        keys_matched=len(by_key),
        incidents=len(incidents),
        live_at_end=sum(i.resolved_at is None for i in incidents),
    )
    return BacktestResult(summary=summary, incidents=tuple(incidents))


def _select(
    rule: Rule, windows: Iterable[WindowValue], t0: float, t1: float
) -> dict[str, list[WindowValue]]:
    """The windows the replay uses, by key; the pattern is matched once per key."""
    selected: dict[str, bool] = {}
    by_key: dict[str, list[WindowValue]] = {}
    for w in windows:
        if w.metric_type != rule.metric_type or not t0 <= w.window_start < t1:
            continue
        key = w.window_key
        ok = selected.get(key)
        if ok is None:
            ok = selected[key] = matches(rule, key)
        if ok:
            by_key.setdefault(key, []).append(w)
    return by_key


def _by_close(
    by_key: dict[str, list[WindowValue]], t1: float
) -> dict[float, dict[str, list[WindowValue]]]:
    """close time -> key -> the key's windows closing then (one, unless the size changed), for
    the windows that close by ``t1``."""
    closing: dict[float, dict[str, list[WindowValue]]] = {}
    for key, ws in by_key.items():
        for w in ws:
            if w.window_end <= t1:
                closing.setdefault(w.window_end, {}).setdefault(key, []).append(w)
    return closing


def _silence_check(
    rule: Rule,
    track: _Track,
    coverage: _Coverage,
    key: str,
    now: float,
    t1: float,
    drafts: list[_Draft],
) -> float | None:
    """Judge a key without current data as the engine's tick does (RuleEngine._judge_current).

    Only live and pending fingerprints are re-judged there. Returns when to look again: when a
    live incident that is clearing would resolve, if that is inside the range and the key is
    still silent then (the tick judges every second; between these two moments it changes
    nothing).
    """
    if coverage.covered(now):
        return None  # data again: its window is judged at its close
    state = current_state(track.latest, track.pending)
    if state is None or (state.status not in LIVE_STATUSES and state.status != "pending"):
        return None
    obs = evaluate_silent(rule, key, now, coverage.size)
    _apply(rule, track, obs, now, drafts)
    after = current_state(track.latest, track.pending)
    if after is None or after.status not in LIVE_STATUSES or after.clear_since is None:
        return None
    due = after.clear_since + rule.resolve_after_seconds
    return due if now < due <= t1 else None


def _apply(rule: Rule, track: _Track, obs: Observation, now: float, drafts: list[_Draft]) -> None:
    """One engine step on one fingerprint, kept as RuleEngine._apply_once keeps it."""
    if not obs.firing and track.latest is None and track.pending is None:
        return  # RuleEngine.apply's shortcut: nothing live or starting, nothing to change
    before = current_state(track.latest, track.pending)
    transition = step(rule, before, obs, now)
    if not transition.changed:
        return
    new = transition.state
    if new is None or new.status == "pending":
        track.pending = new
        return
    track.pending = None
    if any(isinstance(a, Open) for a in transition.actions):
        # the engine takes the id from the INSERT; any unique text serves the replay
        new = replace(new, id=f"backtest:{len(drafts) + 1}")
        track.draft = _Draft(
            state=new, opened_at=now, open_value=obs.observed, open_reason=obs.reason
        )
        drafts.append(track.draft)
    track.latest = new
    draft = track.draft
    if draft is None:  # a step never leaves pending/None for a row without an Open
        raise AssertionError(f"incident of {fingerprint(rule.id, obs.window_key)} without Open")
    draft.state = new
    draft.reopens += sum(isinstance(a, Reopen) for a in transition.actions)
    draft.notifications += sum(isinstance(a, Notify) for a in transition.actions)


def _finish(draft: _Draft) -> BacktestIncident:
    state = draft.state
    live = state.status in LIVE_STATUSES
    return BacktestIncident(
        window_key=state.window_key,
        first_seen=_utc(state.first_seen),
        opened_at=_utc(draft.opened_at),
        resolved_at=None if live or state.resolved_at is None else _utc(state.resolved_at),
        peak_value=state.peak_value,
        open_value=draft.open_value,
        open_reason=draft.open_reason,
        trigger_count=state.trigger_count,
        reopens=draft.reopens,
        notifications=draft.notifications,
    )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- I/O --------------------------------------------------------------------------------------
async def run_backtest(
    conn: psycopg.AsyncConnection[Any],
    rule: Rule,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> BacktestResult:
    """Backtest ``rule`` over [start, end) of stored windows (see the module docstring).

    Raises :class:`Invalid` for a bad range (:func:`check_range`; ``now`` defaults to the
    current time), a range holding more than :data:`MAX_WINDOWS` windows of the rule's metric
    type (of the rule's key, for a pattern without glob characters), or an absence rule.
    """
    start, end = check_range(start, end, datetime.now(UTC) if now is None else now)
    rule = _check_rule(rule)
    windows = await _load_windows(conn, rule, start, end)
    return replay(rule, windows, start, end)


async def _load_windows(
    conn: psycopg.AsyncConnection[Any], rule: Rule, start: datetime, end: datetime
) -> list[WindowValue]:
    pattern = rule.window_key_pattern
    # one row past the budget says "too many" without reading them all
    limit = MAX_WINDOWS + 1
    if _GLOB.isdisjoint(pattern):
        cur = await conn.execute(
            SQL.windows_of_key_in_range, (pattern, rule.metric_type, start, end, limit)
        )
    else:
        cur = await conn.execute(SQL.windows_in_range, (rule.metric_type, start, end, limit))
    rows = await cur.fetchall()
    if len(rows) > MAX_WINDOWS:
        raise Invalid(
            "start",
            f"the range holds more than {MAX_WINDOWS:,} {rule.metric_type} windows; "
            "shorten it or narrow window_key_pattern",
        )
    return [window_from_row(row) for row in rows]


async def load_saved_rule(conn: psycopg.AsyncConnection[Any], ref: int | str) -> Rule:
    """The saved rule with id ``ref`` (int) or name ``ref`` (str).

    Raises :class:`NotFound` when there is none, and :class:`Conflict` when its stored
    definition no longer validates (the engine ignores such a rule, so its backtest would be
    a guess).
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        if isinstance(ref, int):
            await cur.execute(RULES_SQL.get_rule_by_id, (ref,))
        else:
            await cur.execute(RULES_SQL.get_rule_by_name, (ref,))
        row = await cur.fetchone()
    what = f"id {ref}" if isinstance(ref, int) else f"name {ref!r}"
    if row is None:
        raise NotFound(f"no alert rule with {what}")
    try:
        return validate_rule(row)
    except RuleError as err:
        raise Conflict(
            f"alert rule with {what} is stored with an invalid definition ({err}); "
            "the engine ignores it until it is fixed"
        ) from None
