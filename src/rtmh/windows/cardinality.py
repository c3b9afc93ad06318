"""Window-key cardinality: a bound on the window keys one batch and one minute may open.

Role: between the ingest checkpoint and ``build_partials``. Each distinct window key (a record's
service) costs about 24 metrics_agg rows a minute (6 windows x its metric types) to build,
COPY, upsert and for the rules engine to read back. A bug upstream that puts a request id in
``service`` makes every message a new key: measured here, one batch of 20,000 messages from
20,000 services spent 4.8 s in the checkpoint instead of 70 ms, and the rules engine 2 s more
(docs/cardinality.md has the figures). So a record whose key is over the budget keeps its real
service in raw_events (written before this runs), but its windows are counted under
``__other__``.

``KeyBudget`` decides, per key, for the batch in flight:

- a known key is always admitted: admitted in this minute or the previous one, or (after a
  restart, a rebalance or a quiet spell, when this worker's memory does not know it) holding
  metrics_agg windows of the last few minutes (``lookup``, asked only when the batch has more
  unknown keys than its budget left, so normal traffic never queries);
- a new key is admitted while the batch has admitted fewer than ``per_batch`` new keys and the
  minute holds fewer than ``per_minute`` distinct keys (the previous minute's keys hold their
  places, so a flood at the turn of a minute cannot crowd out the services that were there);
- anything else is folded into ``__other__``.

Decisions are kept until the batch is settled (``settle``, after its commit): a batch retried
after a lost COMMIT reply, or split by the ingest safety net, folds every key the same way. A
key folded by one batch may be admitted by the next one; its windows then miss what was folded
(that went to ``__other__``, and ``__all__`` has it all). Admitted keys' windows are exact.

Memory: this minute's and the previous minute's admitted keys, and the batch's decisions (at
most its distinct keys); a minute admits at most ``per_minute`` new keys, so neither set can
grow past a few minutes' worth of known keys.

The minute is the wall clock's (floor(now / 60)), read when a batch's first decision is made:
the budget protects the worker's own time, not event time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import psycopg

from rtmh.db.queries import load
from rtmh.ingest import metrics
from rtmh.ingest.batch import Batch
from rtmh.records import OTHER_WINDOW_KEY, SYNTHETIC_WINDOW_KEYS, DecodedRecord, WindowKey

MINUTE_S: Final = 60
#: folded keys a warning names
EXAMPLES: Final = 5
#: a folded key is shown cut to this length: a flood's keys may be whole payloads
EXAMPLE_CHARS: Final = 60
#: how far back metrics_agg windows make a key known: its windows' starts (up to a window size
#: before its events) in the two minutes the budget remembers, and a minute of slack
KNOWN_HORIZON_S: Final = 180

PER_BATCH_SETTING: Final = "RTMH_WINDOW_MAX_NEW_KEYS_PER_BATCH"
PER_MINUTE_SETTING: Final = "RTMH_WINDOW_MAX_KEYS_PER_MINUTE"

#: which of ``keys`` are known elsewhere (metrics_agg); asked only when a batch needs it
Lookup = Callable[[Sequence[str]], Collection[str]]


@dataclass(frozen=True, slots=True)
class Limits:
    #: new keys one batch may admit
    per_batch: int
    #: distinct keys one minute may hold (known ones included)
    per_minute: int

    def __post_init__(self) -> None:
        if self.per_batch < 1 or self.per_minute < 1:
            raise ValueError(f"window key limits must be >= 1, got {self}")


@dataclass(frozen=True, slots=True)
class Settled:
    """What one committed batch folded."""

    #: windowed records counted under __other__
    records: int = 0
    #: distinct keys folded
    keys: int = 0
    #: a few of them, in the order the batch met them
    examples: tuple[str, ...] = ()
    #: the settings whose bound folded them (PER_BATCH_SETTING, PER_MINUTE_SETTING)
    limits_hit: tuple[str, ...] = ()
    #: the first fold of this minute: worth a warning (at most one a minute)
    warn: bool = False


class KeyBudget:
    """The admission decisions of one worker (pure: the clock and metrics_agg come in as
    arguments). Not thread-safe: the checkpoint's writer thread is its only caller.

    A batch that is fenced, or handed back to the poll loop uncommitted, leaves its decisions
    pending: the batch that carries its records next decides them alike, and the next commit
    settles them all (an admitted key of a dropped batch joins the minute; it costs one place)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._minute: int | None = None
        #: keys admitted by settled batches, this minute and the previous one
        self._current: set[str] = set()
        self._previous: set[str] = set()
        #: the batch in flight: key -> admitted (kept until settle, so retries fold alike)
        self._pending: dict[str, bool] = {}
        #: |current | previous | keys the batch in flight admitted|, kept as keys are admitted
        self._union = 0
        self._pending_new = 0
        self._hit: set[str] = set()
        self._open = False
        self._warned: int | None = None

    def decide(self, keys: Iterable[str], now: float, lookup: Lookup | None = None) -> set[str]:
        """Decide each of ``keys`` (first met, first served) for the batch in flight, unless it
        already was; returns those of ``keys`` that are folded."""
        if not self._open:
            self._open = True
            self._roll(int(now // MINUTE_S))
        pending = self._pending
        folded: set[str] = set()
        fresh: list[str] = []
        for key in keys:
            decided = pending.get(key)
            if decided is None:
                if key in SYNTHETIC_WINDOW_KEYS or key in self._current or key in self._previous:
                    pending[key] = True
                else:
                    fresh.append(key)
            elif not decided:
                folded.add(key)
        if fresh:
            folded |= self._decide_fresh(fresh, lookup)
        return folded

    def _room(self) -> int:
        return min(self.limits.per_batch - self._pending_new, self.limits.per_minute - self._union)

    def _decide_fresh(self, fresh: list[str], lookup: Lookup | None) -> set[str]:
        found: Collection[str] = ()
        if lookup is not None and len(fresh) > self._room():
            found = set(lookup(fresh))
        folded: set[str] = set()
        # known ones first: they take their places in the minute before new ones are counted
        for key in fresh:
            if key in found:
                self._pending[key] = True
                self._union += 1
        for key in fresh:
            if key in found:
                continue
            if self._pending_new >= self.limits.per_batch:
                self._hit.add(PER_BATCH_SETTING)
            elif self._union >= self.limits.per_minute:
                self._hit.add(PER_MINUTE_SETTING)
            else:
                self._pending[key] = True
                self._union += 1
                self._pending_new += 1
                continue
            self._pending[key] = False
            folded.add(key)
        return folded

    def settle(self, services: Iterable[str]) -> Settled:
        """The batch in flight committed: its admitted keys join the minute, its decisions are
        dropped. ``services`` are its windowed records' services (each record once), counted
        when folded."""
        folded = [key for key, admitted in self._pending.items() if not admitted]
        for key, admitted in self._pending.items():
            if admitted and key not in SYNTHETIC_WINDOW_KEYS:
                self._current.add(key)
        records = 0
        if folded:
            lost = set(folded)
            records = sum(1 for service in services if service in lost)
        hit = tuple(sorted(self._hit))
        self._pending = {}
        self._pending_new = 0
        self._hit = set()
        self._open = False
        if not folded:
            return Settled()
        warn = self._warned != self._minute
        if warn:
            self._warned = self._minute
        return Settled(records, len(folded), tuple(folded[:EXAMPLES]), hit, warn)

    def _roll(self, minute: int) -> None:
        # a clock stepped back stays in the minute it was in
        if self._minute is not None and minute <= self._minute:
            return
        follows = self._minute is not None and minute == self._minute + 1
        self._previous = self._current if follows else set()
        self._current = set()
        self._union = len(self._previous)
        self._minute = minute


def fold_records(
    records: Sequence[DecodedRecord], folded: Collection[str]
) -> Sequence[DecodedRecord]:
    """``records`` with each folded service replaced by ``__other__`` (the records themselves
    when nothing is folded: the common case copies nothing)."""
    if not folded:
        return records
    replace = msgspec.structs.replace
    return [
        replace(rec, service=OTHER_WINDOW_KEY) if rec.service in folded else rec for rec in records
    ]


def windowed_services(records: Iterable[DecodedRecord]) -> dict[str, None]:
    """The distinct services of the records the windows count, in the order met."""
    # `not rec.flags` first: the property costs 3x the whole loop on a normal batch (~2.7 ms
    # for 20,000 records), and nearly every record has no flag
    return dict.fromkeys([rec.service for rec in records if not rec.flags or rec.windowed])


def warning_text(settled: Settled, limits: Limits) -> str:
    """The once-a-minute warning: what was folded, why, and what to change."""
    examples = ", ".join(_shown(key) for key in settled.examples)
    more = f" and {settled.keys - len(settled.examples):,} more" if settled.keys > EXAMPLES else ""
    values = {PER_BATCH_SETTING: limits.per_batch, PER_MINUTE_SETTING: limits.per_minute}
    bounds = " and ".join(f"{name}={values[name]:,}" for name in settled.limits_hit)
    return (
        f"window keys over the bound ({bounds}): {settled.records:,} records of "
        f"{settled.keys:,} services ({examples}{more}) counted in the windows of "
        f"{OTHER_WINDOW_KEY}; raw_events keeps their service. A request id in `service`? Fix "
        "the producer. Real services? Raise the setting. (At most one such warning a minute; "
        "rtmh_window_keys_folded_total counts every folded record.)"
    )


def _shown(key: str) -> str:
    return repr(key if len(key) <= EXAMPLE_CHARS else key[: EXAMPLE_CHARS - 1] + "…")


# --- the edge: the worker's clock, metrics_agg, the counter and the log ----------------------

SQL = load("cardinality")
log = logging.getLogger(__name__)


def known_window_keys(
    conn: psycopg.Connection, keys: Sequence[str], horizon_s: int = KNOWN_HORIZON_S
) -> set[str]:
    """Which of ``keys`` hold metrics_agg windows that started in the last ``horizon_s``."""
    rows = conn.execute(SQL.known_window_keys, (list(keys), horizon_s)).fetchall()
    return {str(row[0]) for row in rows}


class KeyGuard:
    """A worker's KeyBudget, wired: ``fold`` inside the checkpoint transaction (and for a batch
    found committed on a retry), ``after_commit`` as the checkpoint's after-commit hook."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time) -> None:
        self.budget = KeyBudget(limits)
        self.limits = limits
        self.clock = clock

    def fold(
        self, records: Sequence[DecodedRecord], conn: psycopg.Connection | None = None
    ) -> Sequence[DecodedRecord]:
        """``records`` as the windows see them; ``conn`` (the checkpoint's transaction) answers
        whether keys this worker does not know are in metrics_agg."""
        lookup: Lookup | None = None
        if conn is not None:

            def lookup(keys: Sequence[str]) -> Collection[str]:
                return known_window_keys(conn, keys)

        folded = self.budget.decide(windowed_services(records), self.clock(), lookup)
        return fold_records(records, folded)

    def after_commit(self, batch: Batch, _touched: set[WindowKey]) -> None:
        """The checkpoint's after-commit hook (``rtmh.ingest.checkpoint.AfterCommit``)."""
        self.settle(rec for _, rec in batch.records)

    def settle(self, records: Iterable[DecodedRecord]) -> Settled:
        settled = self.budget.settle(rec.service for rec in records if rec.windowed)
        if settled.records:
            metrics.WINDOW_KEYS_FOLDED.inc(settled.records)
        if settled.warn:
            log.warning(warning_text(settled, self.limits))
        return settled
