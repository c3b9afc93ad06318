"""The notifier for real: PostgreSQL outbox, LISTEN/NOTIFY, real local receivers (issue 5).

Most tests run the notifier in a background thread of this process (``NotifierThread``); the
SIGKILL test runs it as a subprocess, kills it mid-send and starts another.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from rich.console import Console

from rtmh.notify.channels.config import MAX_TIMEOUT_SECONDS
from rtmh.notify.cli import run_notify_test
from rtmh.notify.notifier import NotifierOptions, NotifierThread
from rtmh.notify.targets import TargetPolicy
from rtmh.records import IncidentSnapshot
from tests.receivers import ALLOW_LOOPBACK, HttpReceiver, SmtpReceiver

T = TypeVar("T")
SECRET = "whsec-notifier-test-5e1f"
ROUTING_KEY = "PDROUTINGKEY0123456789abcdefABCD"
#: the receivers listen on loopback, which the notifier refuses unless allowed
LOOPBACK = TargetPolicy.parse([ALLOW_LOOPBACK])
FAST = NotifierOptions(
    backoff_base_s=0.05,
    backoff_cap_s=0.2,
    poll_cap_s=0.2,
    lease_margin_s=1.0,
    stop_timeout_s=5.0,
    public_url="http://rtmh.test:8080",
    targets=LOOPBACK,
)


# --- fixtures and helpers -----------------------------------------------------------------------


def wait_until(check: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.02)


def add_channel(
    url: str,
    name: str,
    type_: str,
    config: dict[str, Any],
    secrets: dict[str, Any] | None = None,
    enabled: bool = True,
) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notification_channels (name, type, config, secrets, enabled) "
            "VALUES (%s, %s, %s, %s, %s)",
            (name, type_, Jsonb(config), Jsonb(secrets or {}), enabled),
        )


def webhook_channel(url: str, receiver: HttpReceiver, name: str = "hook", **config: Any) -> str:
    add_channel(url, name, "webhook", {"url": receiver.url, **config}, {"hmac_secret": SECRET})
    return name


def add_incident(
    conn: psycopg.Connection[Any],
    *,
    service: str = "checkout",
    rule: str = "high_error_rate",
    severity: str = "high",
) -> IncidentSnapshot:
    now = datetime.now(UTC)
    row = conn.execute(
        "INSERT INTO incidents (title, severity, source, window_key, last_value, threshold, "
        "first_seen, last_seen) VALUES (%s, %s, 'error_rate_monitor', %s, 0.12, 0.05, %s, %s) "
        "RETURNING id::text",
        (f"{rule} on {service}", severity, service, now, now),
    ).fetchone()
    assert row is not None
    return IncidentSnapshot(
        id=row[0],
        title=f"{rule} on {service}",
        severity=severity,  # type: ignore[arg-type]
        status="open",
        source="error_rate_monitor",
        window_key=service,
        rule_name=rule,
        first_seen=now,
        last_seen=now,
        last_value=0.12,
        threshold=0.05,
        condition=">",
        metric_type="error_rate",
    )


def queue(
    conn: psycopg.Connection[Any],
    incident: IncidentSnapshot,
    channel: str,
    event: str = "open",
    *,
    status: str = "pending",
    suppressed_by: int | None = None,
) -> tuple[int, str]:
    key = f"rtmh:{incident.id}:{channel}:{event}:{uuid.uuid4().hex[:6]}"
    row = conn.execute(
        "INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, status, "
        "payload, suppressed_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            incident.id,
            channel,
            event,
            key,
            status,
            Jsonb({"incident": incident.to_dict()}),
            suppressed_by,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0]), key


def queue_one(url: str, channel: str, event: str = "open", **incident: Any) -> tuple[int, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return queue(conn, add_incident(conn, **incident), channel, event)


def notification_rows(url: str) -> dict[int, dict[str, Any]]:
    with (
        psycopg.connect(url) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
    ):
        cur.execute("SELECT * FROM alert_notifications ORDER BY id")
        return {row["id"]: row for row in cur.fetchall()}


def row_in(url: str, notification_id: int, *statuses: str) -> dict[str, Any] | None:
    row = notification_rows(url)[notification_id]
    return row if row["status"] in statuses else None


def timeline(url: str, incident_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT details FROM incident_events WHERE incident_id = %s AND event_type = "
            "'notified' ORDER BY id",
            (incident_id,),
        ).fetchall()
    return [row[0] for row in rows]


@contextmanager
def notifier(url: str, options: NotifierOptions = FAST) -> Iterator[NotifierThread]:
    with NotifierThread(url, options) as running:
        yield running
    assert running.error is None


# --- retries, dead letters, LISTEN ------------------------------------------------------------


def test_receiver_failing_three_times_then_succeeding_gives_one_sent_row_with_four_attempts(
    db_url: str,
) -> None:
    with HttpReceiver(secret=SECRET) as hook:
        channel = webhook_channel(db_url, hook)
        hook.fail_next(3, status=503, body="busy")
        nid, key = queue_one(db_url, channel)
        with notifier(db_url):
            row = wait_until(lambda: row_in(db_url, nid, "sent", "dead"), what="sent")
        requests = hook.requests
    assert row["status"] == "sent"
    assert row["attempts"] == 4
    assert row["http_status"] == 200 and row["response_body"] == "ok"
    assert row["last_error"] is None and row["sent_at"] is not None
    assert len(requests) == 4
    assert {r.header("X-RTMH-Idempotency-Key") for r in requests} == {key}
    assert [r.json()["attempt"] for r in requests] == [1, 2, 3, 4]
    assert all(r.signature_valid for r in requests)
    assert (
        requests[0]
        .json()["incident"]["dashboard_url"]
        .startswith("http://rtmh.test:8080/incidents/")
    )
    [event] = timeline(db_url, str(row["incident_id"]))
    assert event["status"] == "sent" and event["attempts"] == 4 and event["channel"] == channel


def test_receiver_always_failing_gives_dead_after_max_attempts_with_the_last_error(
    db_url: str,
) -> None:
    with HttpReceiver(secret=SECRET) as hook:
        channel = webhook_channel(db_url, hook)
        # A receiver that echoes the secret back: it must not reach the database.
        hook.respond_with(500, body=f"internal error, key was {SECRET}")
        nid, _ = queue_one(db_url, channel)
        with notifier(db_url):
            row = wait_until(lambda: row_in(db_url, nid, "dead"), timeout=15, what="dead")
        assert len(hook.requests) == 8
    assert row["attempts"] == row["max_attempts"] == 8
    assert row["http_status"] == 500
    assert "HTTP 500" in row["last_error"] and "gave up after 8 attempts" in row["last_error"]
    assert SECRET not in row["response_body"] and "***" in row["response_body"]
    assert row["sent_at"] is None
    [event] = timeline(db_url, str(row["incident_id"]))
    assert event["status"] == "dead" and event["attempts"] == 8 and "HTTP 500" in event["error"]


def test_permanent_failures_and_unusable_channels_are_dead_at_once_with_a_clear_error(
    db_url: str,
) -> None:
    with HttpReceiver() as hook:
        add_channel(db_url, "refusing", "webhook", {"url": hook.url_for("/refuse")})
        add_channel(db_url, "off", "webhook", {"url": hook.url}, enabled=False)
        add_channel(db_url, "broken", "webhook", {"url": hook.url, "timeout": 3})
        hook.fail_next(1, status=404, body="no such hook")
        refused, _ = queue_one(db_url, "refusing")
        disabled, _ = queue_one(db_url, "off")
        broken, _ = queue_one(db_url, "broken")
        missing, _ = queue_one(db_url, "nowhere")
        ids = (refused, disabled, broken, missing)
        with notifier(db_url):
            wait_until(lambda: all(row_in(db_url, i, "dead") for i in ids), what="4 dead")
        assert len(hook.requests) == 1
    rows = notification_rows(db_url)
    assert rows[refused]["http_status"] == 404 and rows[refused]["attempts"] == 1
    assert rows[refused]["last_error"].startswith("HTTP 404")
    assert rows[disabled]["last_error"] == "channel 'off' is disabled"
    assert "config.timeout: unknown setting" in rows[broken]["last_error"]
    assert rows[missing]["last_error"].startswith("channel 'nowhere' does not exist (known: ")
    assert all(timeline(db_url, str(rows[i]["incident_id"])) for i in ids)


def test_listen_notify_wakes_the_notifier_without_waiting_for_the_poll(db_url: str) -> None:
    # An hour between polls, far beyond the test's own timeout: once the notifier is ready (its
    # LISTEN active, its first claim done and empty), only the NOTIFY can make it deliver.
    no_poll = NotifierOptions(poll_cap_s=3600.0, public_url=FAST.public_url, targets=LOOPBACK)
    with HttpReceiver() as hook:
        channel = webhook_channel(db_url, hook)
        with notifier(db_url, no_poll):
            nid, _ = queue_one(db_url, channel)
            [request] = hook.wait_for(1, timeout=600)
            wait_until(lambda: row_in(db_url, nid, "sent"), timeout=600, what="sent")
    assert request.json()["notification_id"] == nid


def test_stop_puts_attempts_cut_short_back_to_pending(db_url: str) -> None:
    # The receiver never answers (until it closes) and the channel waits for it as long as a
    # channel may: a stop that returns at all, within the 60 s stop() waits, cut the attempt short.
    with HttpReceiver() as hook:
        channel = webhook_channel(db_url, hook, timeout_seconds=MAX_TIMEOUT_SECONDS)
        hook.hang_next(1, seconds=3600)
        nid, _ = queue_one(db_url, channel)
        options = NotifierOptions(stop_timeout_s=0.3, targets=LOOPBACK)
        running = NotifierThread(db_url, options).start()
        hook.wait_for(1, timeout=600)
        running.stop(timeout=60)
        assert running.error is None
    row = notification_rows(db_url)[nid]
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "stopped during this attempt" in row["last_error"]


# --- at-least-once across a SIGKILL, and several notifiers ----------------------------------


def _start_notifier_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "rtmh.cli", "notifier"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_notifier_killed_mid_send_is_retried_by_the_next_with_the_same_idempotency_key(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **cli_env,
        "POSTGRES_URL": db_url,
        "RTMH_LOG_LEVEL": "INFO",
        "RTMH_NOTIFY_LEASE_MARGIN_S": "0.5",
        "RTMH_NOTIFY_BACKOFF_BASE_S": "0.05",
        # four slots, all of them hung below: the rest wait as pending
        "RTMH_NOTIFY_CONCURRENCY": "4",
        "RTMH_ALLOWED_TARGETS": ALLOW_LOOPBACK,
    }
    log = tmp_path / "notifier.log"
    with HttpReceiver(secret=SECRET) as hook:
        # lease = 3 s timeout + 2 s body read + 0.5 s margin; the kill comes well within 3 s
        channel = webhook_channel(db_url, hook, timeout_seconds=3.0)
        with psycopg.connect(db_url, autocommit=True) as conn:
            keys = dict(
                queue(conn, add_incident(conn, service=f"svc{i}"), channel) for i in range(12)
            )
        hook.hang_next(4, seconds=30)
        first = _start_notifier_process(env, log)
        try:
            hook.wait_for(4, timeout=15)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        before = notification_rows(db_url)
        interrupted = {nid for nid, row in before.items() if row["status"] == "sending"}
        assert len(interrupted) == 4, log.read_text()
        assert {before[nid]["attempts"] for nid in interrupted} == {1}
        second = _start_notifier_process(env, log)
        try:
            wait_until(
                lambda: all(r["status"] == "sent" for r in notification_rows(db_url).values()),
                timeout=15,
                what="every notification sent after the restart",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0, log.read_text()
        requests = hook.requests
    rows = notification_rows(db_url)
    by_notification: dict[int, set[str]] = defaultdict(set)
    for request in requests:
        body = request.json()
        assert request.signature_valid
        assert request.header("X-RTMH-Idempotency-Key") == body["idempotency_key"]
        by_notification[body["notification_id"]].add(body["idempotency_key"])
    # Every notification arrived at least once, and all copies of one carry one key: its own.
    assert by_notification == {nid: {key} for nid, key in keys.items()}
    copies = Counter(request.json()["notification_id"] for request in requests)
    assert {nid: copies[nid] for nid in interrupted} == dict.fromkeys(interrupted, 2)
    assert {nid: rows[nid]["attempts"] for nid in interrupted} == dict.fromkeys(interrupted, 2)
    assert all(copies[nid] == 1 for nid in keys if nid not in interrupted)
    assert {rows[nid]["claimed_by"] for nid in keys} != {before[min(interrupted)]["claimed_by"]}


def test_two_notifiers_never_send_the_same_attempt_twice(db_url: str) -> None:
    # Few slots each (the test receiver's listen backlog is 5), so both notifiers take part.
    options = NotifierOptions(
        concurrency=3, batch_size=3, public_url=FAST.public_url, targets=LOOPBACK
    )
    with HttpReceiver(secret=SECRET) as hook:
        channel = webhook_channel(db_url, hook)
        with notifier(db_url, options) as a, notifier(db_url, options) as b:
            with psycopg.connect(db_url, autocommit=True) as conn:
                for batch in range(20):
                    with conn.transaction():
                        for i in range(10):
                            queue(conn, add_incident(conn, service=f"s{batch}-{i}"), channel)
            requests = hook.wait_for(200, timeout=15)
            wait_until(
                lambda: all(r["status"] == "sent" for r in notification_rows(db_url).values()),
                what="200 sent",
            )
        # both notifiers have stopped: every request they made is in, no late copy can follow
        requests = hook.requests
    keys = Counter(r.header("X-RTMH-Idempotency-Key") for r in requests)
    assert len(keys) == 200 and set(keys.values()) == {1}
    rows = notification_rows(db_url).values()
    assert all(r["attempts"] == 1 for r in rows)
    assert {r["claimed_by"] for r in rows} == {a.notifier.id, b.notifier.id}


# --- channels ---------------------------------------------------------------------------------


def test_every_channel_type_delivers_through_the_notifier(db_url: str) -> None:
    with (
        HttpReceiver(secret=SECRET) as hook,
        HttpReceiver() as others,
        SmtpReceiver() as smtp,
    ):
        webhook_channel(db_url, hook, name="hook")
        add_channel(db_url, "am", "alertmanager", {"url": others.url_for("/am")})
        add_channel(db_url, "slack", "slack", {}, {"url": others.url_for("/slack")})
        add_channel(
            db_url, "pd", "pagerduty", {"base_url": others.base_url}, {"routing_key": ROUTING_KEY}
        )
        add_channel(
            db_url,
            "mail",
            "email",
            {
                "host": smtp.host,
                "port": smtp.port,
                "from_addr": "rtmh@example.com",
                "to_addrs": ["oncall@example.com"],
            },
        )
        with psycopg.connect(db_url, autocommit=True) as conn:
            incident = add_incident(conn)
            queued = {name: queue(conn, incident, name) for name in ("hook", "am", "slack", "pd")}
            mail_id, mail_key = queue(conn, incident, "mail")
            resolve_id, _ = queue(conn, incident, "pd", "resolve")
        with notifier(db_url):
            ids = [nid for nid, _ in queued.values()] + [mail_id, resolve_id]
            wait_until(lambda: all(row_in(db_url, i, "sent") for i in ids), what="all sent")
            [mail] = smtp.wait_for(1)
        [signed] = hook.requests
        by_path = defaultdict(list)
        for request in others.requests:
            by_path[request.path].append(request)
    assert signed.signature_valid is True
    assert signed.header("X-RTMH-Idempotency-Key") == queued["hook"][1]
    assert signed.json()["incident"]["id"] == incident.id
    [am] = by_path["/am"]
    assert am.json()["alerts"][0]["labels"]["alertname"] == "high_error_rate"
    [slack] = by_path["/slack"]
    assert "high_error_rate" in slack.body.decode()
    trigger, resolve = sorted(
        by_path["/v2/enqueue"], key=lambda r: r.json()["event_action"] != "trigger"
    )
    assert trigger.json()["event_action"] == "trigger"
    assert resolve.json()["event_action"] == "resolve"
    assert {trigger.json()["dedup_key"], resolve.json()["dedup_key"]} == {incident.id}
    assert trigger.json()["routing_key"] == ROUTING_KEY
    # Folded onto a continuation line (longer than 78 characters): unfolding leaves a space.
    assert mail.message["X-RTMH-Idempotency-Key"].strip() == mail_key
    assert "high_error_rate" in mail.subject and mail.part("html") is not None
    rows = notification_rows(db_url)
    assert rows[mail_id]["http_status"] is None and rows[mail_id]["response_body"]
    assert len(timeline(db_url, incident.id)) == 6


# --- silences ---------------------------------------------------------------------------------


def test_a_silence_created_after_queuing_suppresses_matching_pending_rows(db_url: str) -> None:
    with HttpReceiver() as hook:
        channel = webhook_channel(db_url, hook)
        with psycopg.connect(db_url, autocommit=True) as conn:
            checkout = add_incident(conn, service="checkout")
            payments = add_incident(conn, service="payments")
            muted, _ = queue(conn, checkout, channel)
            kept, kept_key = queue(conn, payments, channel)
            row = conn.execute(
                "INSERT INTO silences (matchers, ends_at, comment, created_by) "
                "VALUES (%s, now() + interval '1 hour', 'deploy', 'alice') RETURNING id",
                (Jsonb({"service": "check*", "severity": "high"}),),
            ).fetchone()
            assert row is not None
            silence = row[0]
            conn.execute(
                "INSERT INTO silences (matchers, starts_at, ends_at) "
                "VALUES (%s, now() - interval '2 hours', now() - interval '1 hour')",
                (Jsonb({"service": "payments"}),),
            )
            # Written suppressed by the engine: never sent, never touched.
            engine_muted, _ = queue(
                conn, checkout, channel, "update", status="suppressed", suppressed_by=silence
            )
        with notifier(db_url):
            wait_until(lambda: row_in(db_url, muted, "suppressed"), what="suppressed")
            wait_until(lambda: row_in(db_url, kept, "sent"), what="sent")
        # the notifier has stopped: had it sent the muted row, the request would be here
        requests = hook.requests
    assert [r.header("X-RTMH-Idempotency-Key") for r in requests] == [kept_key]
    rows = notification_rows(db_url)
    assert rows[muted]["suppressed_by"] == silence and rows[muted]["attempts"] == 0
    assert rows[engine_muted]["status"] == "suppressed" and rows[engine_muted]["attempts"] == 0


# --- rtmh notify test -------------------------------------------------------------------------


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None), buffer


def test_notify_test_prints_the_receivers_answer(db_url: str) -> None:
    with HttpReceiver(secret=SECRET) as hook:
        channel = webhook_channel(db_url, hook, name="demo")
        hook.respond_with(202, body="accepted by the test receiver")
        console, buffer = _console()
        outcome = run_notify_test(
            db_url, channel, console=console, public_url="http://x.test", targets=LOOPBACK
        )
        [request] = hook.requests
        hook.respond_with(503, body="receiver is down")
        failing_console, failing = _console()
        failed = run_notify_test(db_url, channel, console=failing_console, targets=LOOPBACK)
    assert outcome.exit_code == 0
    text = buffer.getvalue()
    assert "delivered: HTTP 202" in text and "accepted by the test receiver" in text
    assert request.header("X-RTMH-Event") == "test" and request.signature_valid
    assert request.json()["incident"]["dashboard_url"] == "http://x.test/"
    assert failed.exit_code == 1
    assert "HTTP 503" in failing.getvalue() and "receiver is down" in failing.getvalue()
    assert SECRET not in text + failing.getvalue()
    assert notification_rows(db_url) == {}


def test_notify_test_of_an_unknown_channel_lists_the_known_ones(db_url: str) -> None:
    console, buffer = _console()
    outcome = run_notify_test(db_url, "nope", console=console)
    assert outcome.exit_code == 1
    assert "no channel named 'nope'" in buffer.getvalue()
    assert "demo-webhook" in buffer.getvalue()


# --- robustness -------------------------------------------------------------------------------


def test_the_notifier_reconnects_after_losing_its_database_connections(db_url: str) -> None:
    with HttpReceiver() as hook:
        channel = webhook_channel(db_url, hook)
        with notifier(db_url) as running:
            with psycopg.connect(db_url, autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            assert killed is not None and killed[0] >= 2
            nid, _ = queue_one(db_url, channel)
            wait_until(lambda: row_in(db_url, nid, "sent"), timeout=10, what="sent")
            assert running.error is None


def test_outbox_guards_a_taken_over_attempt_and_reaps_an_exhausted_one(db_url: str) -> None:
    from rtmh.notify import outbox

    with psycopg.connect(db_url, autocommit=True) as conn:
        incident = add_incident(conn)
        first, _ = queue(conn, incident, "hook")
        exhausted, _ = queue(conn, incident, "hook", "update")
        conn.execute(
            "UPDATE alert_notifications SET status = 'sending', attempts = 9, claimed_by = 'gone', "
            "claimed_until = now() - interval '1 second' WHERE id = %s",
            (exhausted,),
        )

    async def scenario() -> tuple[list[int], list[int], bool, bool, list[tuple[int, str]]]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            a = await outbox.claim_due(conn, "a", 10, {"hook": 0.05}, 30.0)
            await asyncio.sleep(0.1)  # a's lease expires mid-attempt
            b = await outbox.claim_due(conn, "b", 10, {}, 30.0)
            late = await outbox.record_sent(conn, a[0], "a", 200, "ok")
            fresh = await outbox.record_sent(conn, b[0], "b", 200, "ok")
            reaped = await outbox.reap_exhausted(conn)
            return [r.attempts for r in a], [r.attempts for r in b], late, fresh, reaped

    a, b, late, fresh, reaped = asyncio.run(scenario())
    assert (a, b) == ([1], [2])  # the exhausted row (9 > 8 attempts) is never claimed
    assert late is False and fresh is True
    assert reaped == [(exhausted, "hook")]
    rows = notification_rows(db_url)
    assert rows[first]["status"] == "sent" and rows[first]["claimed_by"] == "b"
    assert rows[exhausted]["status"] == "dead" and "lease expired" in rows[exhausted]["last_error"]
    assert [e["status"] for e in timeline(db_url, incident.id)] == ["sent", "dead"]
