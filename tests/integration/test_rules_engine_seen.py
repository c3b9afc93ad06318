"""The rules engine skips the transaction for a clear verdict on an incident it resolved itself,
and still reads again an incident another worker reopened meanwhile (at its next tick).

Two engines on one database stand for two workers; each is driven on the test's thread, as the
worker's own thread would drive it (windows handed over as a committed batch would)."""

from __future__ import annotations

import time

import psycopg
import pytest

from rtmh.config import load_settings
from rtmh.rules import store
from rtmh.rules.engine import RuleEngine

KEY = "checkout"


@pytest.fixture
def window(db_url: str) -> tuple[str, str, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE alert_rules SET enabled = false")
        conn.execute(
            "INSERT INTO alert_rules (name, metric_type, condition, threshold, for_seconds,"
            " resolve_after_seconds, window_key_pattern, min_count, severity, channels)"
            " VALUES ('checkout_errors', 'error_rate', '>', 0.05, 0, 0, '*', 1, 'low',"
            " '{demo-webhook}')"
        )
    start = int(time.time() // 10 * 10) - 40  # a 60-s window holding now and the next 10 s
    return (KEY, "error_rate", start)


def _set_rate(db_url: str, start: int, rate: float) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value,"
            " count, sum) VALUES (%s, 'error_rate', to_timestamp(%s), to_timestamp(%s), %s, 100,"
            " %s) ON CONFLICT (window_key, metric_type, window_start) DO UPDATE SET"
            " value = EXCLUDED.value, sum = EXCLUDED.sum",
            (KEY, start, start + 60, rate, rate * 100),
        )


def _incident(db_url: str) -> tuple[str, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status, trigger_count FROM incidents WHERE window_key = %s"
            " ORDER BY first_seen DESC LIMIT 1",
            (KEY,),
        ).fetchone()
    assert row is not None, "no incident"
    return str(row[0]), int(row[1])


def _engine(db_url: str) -> RuleEngine:
    engine = RuleEngine(load_settings(postgres_url=db_url), db_url)
    engine.rules = store.load_rules(engine._db())
    return engine


def _open(engine: RuleEngine, db_url: str, window: tuple[str, str, int], now: float) -> None:
    """A firing window, evaluated as a committed batch would hand it over: the incident opens."""
    _set_rate(db_url, window[2], 0.5)
    engine.tick(now)
    engine.evaluate_touched({window}, now)
    assert _incident(db_url) == ("open", 1)


def test_a_resolved_incident_costs_no_transaction_while_clear_and_is_read_again_when_reopened(
    db_url: str, window: tuple[str, str, int]
) -> None:
    start = window[2]
    ours, other = _engine(db_url), _engine(db_url)
    try:
        now = time.time()
        _open(ours, db_url, window, now)
        _set_rate(db_url, start, 0.0)
        ours.evaluate_touched({window}, now + 1)
        assert _incident(db_url) == ("resolved", 1)

        # recently resolved, so worth a look when it fires again; clear, it needs no transaction
        ours.tick(now + 2)
        looked = ours.evaluations
        for step in range(3):
            ours.evaluate_touched({window}, now + 3 + step)
        assert ours.evaluations == looked

        # another worker reopens it; our next tick reads it again and resolves it on our verdict
        _set_rate(db_url, start, 0.5)
        other.tick(now + 6)
        other.evaluate_touched({window}, now + 6)
        assert _incident(db_url) == ("open", 2)
        _set_rate(db_url, start, 0.0)
        ours.tick(now + 7)
        assert _incident(db_url) == ("resolved", 2)
        # and a firing verdict is never skipped
        _set_rate(db_url, start, 0.5)
        ours.evaluate_touched({window}, now + 8)
        assert _incident(db_url) == ("open", 3)
    finally:
        for engine in (ours, other):
            engine._db().close()


def _values(db_url: str) -> tuple[float, float]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT last_value, peak_value FROM incidents WHERE window_key = %s", (KEY,)
        ).fetchone()
    assert row is not None, "no incident"
    return float(row[0]), float(row[1])


def test_a_live_incident_is_refreshed_once_a_second_but_a_new_peak_at_once(
    db_url: str, window: tuple[str, str, int]
) -> None:
    start = window[2]
    engine = _engine(db_url)
    try:
        now = time.time()
        _open(engine, db_url, window, now)
        written = engine.evaluations

        _set_rate(db_url, start, 0.4)  # firing, lower: only last_seen and last_value would move
        engine.evaluate_touched({window}, now + 0.3)
        engine.evaluate_touched({window}, now + 0.6)
        assert engine.evaluations == written and _values(db_url) == (0.5, 0.5)

        _set_rate(db_url, start, 0.6)  # a new peak is written at once
        engine.evaluate_touched({window}, now + 0.7)
        assert engine.evaluations == written + 1 and _values(db_url) == (0.6, 0.6)

        # the tick writes what waited (it re-judges every live incident)...
        _set_rate(db_url, start, 0.45)
        engine.evaluate_touched({window}, now + 0.8)
        assert _values(db_url) == (0.6, 0.6)
        engine.tick(now + 0.9)
        assert _values(db_url) == (0.45, 0.6)
        # ...and so does a verdict a second after the row was last written
        _set_rate(db_url, start, 0.5)
        engine.evaluate_touched({window}, now + 1.5)
        assert _values(db_url) == (0.45, 0.6)
        engine.evaluate_touched({window}, now + 1.9)
        assert _values(db_url) == (0.5, 0.6)
    finally:
        engine._db().close()


def test_an_incident_a_person_resolves_during_a_tick_stays_resolved(
    db_url: str, window: tuple[str, str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick reads which incidents are live, then re-judges each on the current windows. One
    resolved by hand in between (the window still firing, no new data) is not reopened by that
    stale list: only new data reopens it (CI saw the dashboard's resolve undone this way)."""
    engine = _engine(db_url)
    try:
        now = time.time()
        _open(engine, db_url, window, now)
        read_before = store.live_incident_keys(engine._db())
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE incidents SET status = 'resolved', resolved_at = now()"
                " WHERE window_key = %s",
                (KEY,),
            )
        monkeypatch.setattr(store, "live_incident_keys", lambda _conn: read_before)
        engine.tick(now + 1)
        assert _incident(db_url) == ("resolved", 1)
        # new data that still fires does reopen it
        monkeypatch.undo()
        engine.evaluate_touched({window}, now + 2)
        assert _incident(db_url) == ("open", 2)
    finally:
        engine._db().close()
