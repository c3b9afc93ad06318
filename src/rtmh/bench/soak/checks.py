"""The soak's end: wait until the hub has stored, settled and delivered everything the traffic
caused, then check it against what was sent: every good message once in raw_events, every bad
one in dead_letters, metrics_agg equal to a recomputation from raw_events, every burst alerted,
and every notification accepted by the receiver once per idempotency key."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import psycopg

from rtmh.bench.detect.model import Burst
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.bench.soak.model import Checks, match_alerts
from rtmh.bench.soak.traffic import SoakTraffic
from rtmh.bench.stats import percentile
from rtmh.bench.windows_oracle import windows_problems
from rtmh.db.queries import load

SQL = load("bench")


class NotSettled(RuntimeError):
    """The hub did not store or deliver everything within the time allowed."""


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: Callable[[], str],
    check: Callable[[], None],
    poll_s: float = 1.0,
) -> None:
    """Polls ``condition`` (an error in it counts as not yet: PostgreSQL may be restarting);
    ``check()`` raises when a process died; NotSettled(what()) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except psycopg.OperationalError:
            pass
        check()
        if time.monotonic() > deadline:
            raise NotSettled(what())
        time.sleep(poll_s)


def stored_counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(SQL.soak_stored_counts).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def unsettled(url: str) -> tuple[int, int]:
    """(live incidents, notifications not yet sent or given up)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(SQL.soak_unsettled).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def check_messages(url: str, traffic: SoakTraffic, checks: Checks) -> None:
    """Good messages by sequence number, bad ones by marker."""
    with psycopg.connect(url) as conn, conn.cursor(name="soak_good") as cur:
        cur.itersize = 50_000
        found = Counter(int(row[0]) for row in cur.execute(SQL.soak_good_sequences))
    expected = set(range(traffic.good)) - traffic.failed_good
    checks.good_sent = traffic.good
    checks.good_failed = len(traffic.failed_good)
    checks.good_rows = sum(found.values())
    checks.good_missing = len(expected - found.keys())
    checks.good_duplicates = sum(n - 1 for n in found.values() if n > 1)
    checks.good_unexpected = len(found.keys() - expected)
    with psycopg.connect(url) as conn:
        rows = conn.execute(SQL.soak_bad_markers).fetchall()
    markers = Counter(int(m) for m, _reason in rows if m is not None)
    checks.bad_sent = traffic.bad
    checks.bad_dead_lettered = len(markers)
    checks.bad_missing = len(set(range(traffic.bad)) - traffic.failed_bad - markers.keys())
    reasons = Counter(_reason_kind(reason) for _m, reason in rows)
    checks.bad_reasons = dict(reasons)


def _reason_kind(reason: str) -> str:
    """A dead letter's reason without its details (positions, lengths)."""
    return reason.split(":", 1)[0][:60]


def check_windows(url: str, prefix: str, size: int, slide: int, checks: Checks) -> None:
    checks.windows_compared, checks.window_problems = windows_problems(url, prefix, size, slide)


def check_alerts(
    url: str, bursts: list[Burst], burst_s: float, traffic_started: float, checks: Checks
) -> None:
    """Every burst alerted: an incident of its service opened during or after it."""
    with psycopg.connect(url) as conn:
        openings = [(str(s), float(at)) for s, at in conn.execute(SQL.soak_openings)]
    started = [(b.service, b.started_at) for b in bursts if b.started_at is not None]
    found = match_alerts(started, burst_s, openings)
    checks.bursts = len(bursts)
    checks.bursts_alerted = found.alerted
    checks.openings_without_burst = [
        f"{service} at +{at - traffic_started:.0f} s" for service, at in found.unexplained
    ]
    if found.delays_s:
        checks.alert_delay_p50_s = round(percentile(found.delays_s, 0.5), 2)
        checks.alert_delay_max_s = max(found.delays_s)


def check_notifications(url: str, receiver: ArrivalReceiver, checks: Checks) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(SQL.soak_notification_rows).fetchall()
        incidents = conn.execute(SQL.soak_incidents).fetchone()
    accepted = receiver.accepted_keys()
    keys = {key for key, *_ in rows}
    checks.incidents = int(incidents[0]) if incidents else 0
    checks.notifications = len(rows)
    checks.notification_status = dict(Counter(status for _k, status, _a, _e in rows))
    checks.notification_attempts = sum(int(attempts) for _k, _s, attempts, _e in rows)
    checks.keys_accepted = len(accepted.keys() & keys)
    checks.keys_missing = len(keys - accepted.keys())
    checks.keys_unknown = len(accepted.keys() - keys)
    checks.redeliveries = receiver.duplicates
    checks.refused_by_receiver = receiver.refused
    checks.bad_signatures = receiver.bad_signatures
