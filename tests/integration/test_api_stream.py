"""GET /api/v1/stream for real: `rtmh api` on a migrated PostgreSQL, read as server-sent events.

Rows written the way the engine and the notifier write them reach a connected client through
the triggers' NOTIFY; a client that reconnects with Last-Event-ID gets exactly what it missed;
ids that commit out of order are still delivered in order; the broadcaster survives losing its
connection; the worker's throughput gauge arrives as ``event: ingest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from rtmh import simulate as sim
from rtmh.api.stream import Broadcaster
from rtmh.ingest.batch import Batch
from rtmh.ingest.throughput import ThroughputPublisher
from rtmh.kafka.client import ensure_topics, make_producer
from rtmh.worker import build_worker
from tests.integration.api_support import Api, make_token, running_api
from tests.integration.ingest_support import in_thread, settings_for, wait_for

STREAM = "/api/v1/stream"
# a wait deadline on a loaded CI machine, not a speed bound (events arrive in milliseconds)
ARRIVES_S = 20.0


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(
        module_db_url, tmp_path_factory.mktemp("api"), token_prefix="stream"
    ) as running:
        yield running


# --- an SSE client ------------------------------------------------------------------------------
@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: int | None
    received: float  # time.perf_counter()


@dataclass
class Reader:
    """Parses the stream as it comes in (the text/event-stream grammar, enough of it), on a
    task of its own, so a wait that times out leaves the stream intact."""

    response: httpx.Response
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pump(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    self.events.append(
                        Event(
                            fields.get("event", "message"),
                            json.loads(fields["data"]),
                            int(fields["id"]) if "id" in fields else None,
                            time.perf_counter(),
                        )
                    )
                fields = {}
                self._changed.set()
        finally:
            self.ended = True
            self._changed.set()

    async def until(self, done: Callable[[Reader], bool], timeout: float = ARRIVES_S) -> None:
        async def loop() -> None:
            while not done(self):
                if self.ended:
                    raise AssertionError(f"the stream ended; comments: {self.comments}")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def subscribed(self) -> None:
        """The stream's opening comment: the client is subscribed from here on."""
        await self.until(lambda r: "rtmh stream" in r.comments)

    def of(self, incident_id: str) -> list[Event]:
        return [e for e in self.events if e.data.get("incident_id") == incident_id]


@asynccontextmanager
async def stream(
    api: Api,
    *,
    scope: str = "read",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> AsyncIterator[Reader]:
    auth = {"Authorization": f"Bearer {api.tokens[scope]}"}
    async with (
        httpx.AsyncClient(
            base_url=api.url, headers=auth, timeout=httpx.Timeout(10, read=None)
        ) as client,
        client.stream("GET", STREAM, headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = Reader(response)
        reader.start()
        try:
            await reader.subscribed()
            yield reader
        finally:
            await reader.stop()


# --- rows as the engine and the notifier write them ----------------------------------------------
def open_incident(db_url: str, key: str = "checkout") -> str:
    """An incident and its 'opened' timeline entry, in one transaction, as the engine does."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "INSERT INTO incidents (title, severity, status, source, window_key, fingerprint, "
            "last_value, peak_value, threshold, metadata) "
            "VALUES (%s, 'high', 'open', 'error_rate_monitor', %s, %s, 0.3, 0.4, 0.05, %s) "
            "RETURNING id::text",
            (
                f"error rate on {key}",
                key,
                f"stream:{key}:{uuid.uuid4().hex[:8]}",
                Jsonb({"trigger": {"value": 0.3, "threshold": 0.05}}),
            ),
        ).fetchone()
        assert row is not None
        timeline(conn, row[0], "opened", to_status="open")
    return str(row[0])


def timeline(
    conn: psycopg.Connection, incident_id: str, event_type: str, *, to_status: str | None = None
) -> None:
    conn.execute(
        "INSERT INTO incident_events (incident_id, event_type, to_status, value) "
        "VALUES (%s, %s, %s, 0.3)",
        (incident_id, event_type, to_status),
    )


def add_timeline(db_url: str, incident_id: str, event_type: str = "updated") -> None:
    with psycopg.connect(db_url) as conn:
        timeline(conn, incident_id, event_type)


def max_stream_id(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM stream_events").fetchone()
    assert row is not None
    return int(row[0])


def subscribers(api: Api) -> float:
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    found = re.search(r"^rtmh_api_stream_subscribers (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


# --- the tests ------------------------------------------------------------------------------------
def test_needs_a_token_and_checks_its_parameters(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        refused = anonymous.get(STREAM)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["www-authenticate"].startswith("Bearer")
    with api.client("read") as reader:
        bad = reader.get(STREAM, params={"types": "incident,weather"})
        assert bad.status_code == 422 and "weather" in bad.json()["detail"], bad.text
        bad = reader.get(STREAM, headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "last_event_id"
    schema = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    assert STREAM in schema["paths"]


def test_an_incident_reaches_a_connected_client_at_once(api: Api) -> None:
    async def run() -> float:
        async with stream(api) as reader:
            started = time.perf_counter()
            incident = open_incident(api.db_url, "latency")
            committed = time.perf_counter()
            await reader.until(lambda r: bool(r.of(incident)))
            (event,) = reader.of(incident)
            assert event.event == "incident" and event.id is not None
            assert event.data["event_type"] == "opened" and event.data["to_status"] == "open"
            assert event.data["incident"]["title"] == "error rate on latency"
            assert event.data["incident"]["severity"] == "high"
            assert "created_at" in event.data
            print(
                f"\nincident event latency: {(event.received - committed) * 1000:.1f} ms "
                f"after COMMIT returned ({(event.received - started) * 1000:.1f} ms "
                "after the INSERT began)"
            )
            return event.received - committed

    asyncio.run(run())


def test_a_notification_result_arrives_and_a_claim_does_not(api: Api) -> None:
    async def run() -> None:
        incident = open_incident(api.db_url, "notify")
        async with stream(api, params={"types": "notification"}) as reader:
            with psycopg.connect(api.db_url, autocommit=True) as conn:
                row = conn.execute(
                    "INSERT INTO alert_notifications (incident_id, channel, event, "
                    "idempotency_key) VALUES (%s, 'ops-webhook', 'open', %s) RETURNING id",
                    (incident, uuid.uuid4().hex),
                ).fetchone()
                assert row is not None
                conn.execute(
                    "UPDATE alert_notifications SET status = 'sending', attempts = 1 WHERE id = %s",
                    row,
                )
                conn.execute(
                    "UPDATE alert_notifications SET status = 'sent', http_status = 200, "
                    "sent_at = now(), updated_at = now() WHERE id = %s",
                    row,
                )
            await reader.until(lambda r: bool(r.of(incident)))
            (event,) = reader.of(incident)
            assert event.event == "notification" and event.id is not None
            assert event.data["notification_id"] == row[0]
            assert event.data["status"] == "sent" and event.data["http_status"] == 200
            assert event.data["channel"] == "ops-webhook" and event.data["attempts"] == 1
            # the filter: the incident's 'opened' entry was never sent to this client
            assert all(e.event == "notification" for e in reader.events)

    asyncio.run(run())


def test_last_event_id_resumes_with_exactly_what_was_missed(api: Api) -> None:
    async def run() -> None:
        async with stream(api) as first:
            incident = open_incident(api.db_url, "resume")
            await first.until(lambda r: bool(r.of(incident)))
            seen = first.of(incident)[-1].id
            assert seen is not None
        # disconnected: these happen while nobody listens
        for _ in range(3):
            add_timeline(api.db_url, incident)

        async def resume(expected: list[str], live: str, **how: dict[str, str]) -> None:
            async with stream(api, **how) as again:  # type: ignore[arg-type]
                await again.until(lambda r: len(r.of(incident)) >= len(expected))
                add_timeline(api.db_url, incident, live)
                await again.until(lambda r: len(r.of(incident)) > len(expected))
                # give a duplicate its chance to show up: one more event after it
                marker = open_incident(api.db_url, "resume-marker")
                await again.until(lambda r: bool(r.of(marker)))
                got = [e.data["event_type"] for e in again.of(incident)]
                assert got == [*expected, live], got
                ids = [e.id for e in again.events]
                assert all(i is not None and i > seen for i in ids), ids
                assert ids == sorted(ids) and len(set(ids)) == len(ids), ids  # type: ignore[type-var]

        await resume(["updated"] * 3, "comment", headers={"Last-Event-ID": str(seen)})
        # the query parameter, for clients that cannot set headers; the header wins over it
        await resume(["updated"] * 3 + ["comment"], "closed", params={"last_event_id": str(seen)})
        await resume(
            ["updated"] * 3 + ["comment", "closed"],
            "reopened",
            headers={"Last-Event-ID": str(seen)},
            params={"last_event_id": "0"},
        )

    asyncio.run(run())


def test_ids_committed_out_of_order_are_delivered_in_order(api: Api) -> None:
    async def run() -> None:
        incident = open_incident(api.db_url, "order")
        async with stream(api) as reader:
            slow = psycopg.connect(api.db_url)
            try:
                # the slow writer takes the lower id and commits last
                timeline(slow, incident, "comment")
                add_timeline(api.db_url, incident, "updated")
                # the lower id is still open: the higher one must wait for it
                with pytest.raises(TimeoutError):
                    await reader.until(lambda r: bool(r.of(incident)), timeout=1.0)
                slow.commit()
            finally:
                slow.close()
            await reader.until(lambda r: len(r.of(incident)) >= 2)
            got = [(e.id, e.data["event_type"]) for e in reader.of(incident)]
            assert [t for _, t in got] == ["comment", "updated"], got
            assert got[0][0] is not None and got[1][0] is not None and got[0][0] < got[1][0]

            # a rolled-back id: the one after it is delivered once its transaction has ended
            rolled = psycopg.connect(api.db_url)
            try:
                timeline(rolled, incident, "comment")
                add_timeline(api.db_url, incident, "resolved")
                rolled.rollback()
            finally:
                rolled.close()
            ended = time.perf_counter()
            await reader.until(lambda r: len(r.of(incident)) >= 3)
            last = reader.of(incident)[-1]
            assert last.data["event_type"] == "resolved"
            print(f"\nevent after a rolled-back id: {(last.received - ended) * 1000:.0f} ms")

    asyncio.run(run())


def test_a_client_going_away_frees_its_queue(api: Api) -> None:
    async def run() -> None:
        async with stream(api), stream(api, params={"types": "ingest"}):
            assert subscribers(api) == 2

    asyncio.run(run())
    wait_for(lambda: subscribers(api) == 0, 10, "both subscriptions to go")


def test_the_broadcaster_reconnects_and_catches_up(api: Api) -> None:
    async def run() -> None:
        incident = open_incident(api.db_url, "reconnect")
        async with stream(api) as reader:
            with psycopg.connect(api.db_url, autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'rtmh-api-stream' AND datname = current_database()"
                ).fetchall()
                assert killed == [(True,)], killed
                # while it is away: no NOTIFY reaches it, the catch-up must find these
                for _ in range(3):
                    timeline(conn, incident, "updated")
            await reader.until(lambda r: len(r.of(incident)) >= 3)
            assert [e.data["event_type"] for e in reader.of(incident)] == ["updated"] * 3
            add_timeline(api.db_url, incident, "resolved")
            await reader.until(lambda r: len(r.of(incident)) >= 4)
        wait_for(
            lambda: "stream: listening on" in api.log_text() and "again" in api.log_text(),
            10,
            "the reconnection to be logged",
        )

    asyncio.run(run())


def test_ingest_throughput_arrives_without_an_id(api: Api) -> None:
    ticks = iter([100.0, 102.0])
    publisher = ThroughputPublisher(api.db_url, lag=lambda: 7, clock=lambda: next(ticks))
    batch = Batch()
    batch.records.extend([(None, None)] * 10)  # type: ignore[list-item]  # counted, not read
    batch.rejected.extend([(None, None)] * 2)  # type: ignore[list-item]

    async def run() -> None:
        async with stream(api, params={"types": "ingest"}) as reader:
            publisher.after_commit(batch, set())
            assert publisher.publish()
            await reader.until(lambda r: bool(r.events))
            (event,) = reader.events
            assert event.event == "ingest" and event.id is None
            assert event.data["events_per_s"] == 5.0 and event.data["dead_letters_per_s"] == 1.0
            assert event.data["batches"] == 1 and event.data["lag"] == 7
            assert "kind" not in event.data and event.data["worker"] and event.data["at"]

    try:
        asyncio.run(run())
    finally:
        publisher.stop()


def test_an_idle_stream_gets_keepalive_comments(module_db_url: str, tmp_path: Path) -> None:
    """Every RTMH_API_STREAM_KEEPALIVE_S (15 s by default; 1 s here, so the test is short)."""

    async def run(api: Api) -> None:
        async with stream(api, params={"types": "ingest"}) as reader:
            await reader.until(lambda r: r.comments.count("keepalive") >= 2, timeout=25)

    quick = {"RTMH_API_STREAM_KEEPALIVE_S": "1"}
    with running_api(module_db_url, tmp_path, quick, token_prefix="keepalive") as api:
        asyncio.run(run(api))


def test_revoking_the_token_ends_its_open_stream(module_db_url: str, tmp_path: Path) -> None:
    """The token is checked again at each keepalive interval (1 s here): a stream opened with
    it ends, saying why, once it is revoked; a live token's stream goes on."""

    async def run(api: Api) -> None:
        async with (
            stream(api, scope="doomed") as doomed,
            stream(api, scope="read") as kept,
        ):
            with api.client("admin") as admin:
                assert admin.post("/api/v1/tokens/revoke-doomed/revoke").status_code == 200
            await doomed.until(lambda r: r.ended, timeout=30)
            assert "credentials revoked or expired: sign in again" in doomed.comments
            await kept.until(lambda r: r.comments.count("keepalive") >= 3, timeout=30)
            assert not kept.ended

    quick = {"RTMH_API_STREAM_KEEPALIVE_S": "1"}
    with running_api(module_db_url, tmp_path, quick, token_prefix="revoke") as api:
        api.tokens["doomed"] = make_token(module_db_url, "revoke-doomed", "read")
        asyncio.run(run(api))


def test_resuming_from_the_newest_id_replays_nothing(module_db_url: str, api: Api) -> None:
    """A client that resumes from the very newest id gets nothing replayed and everything
    after it live."""

    async def run() -> None:
        newest = max_stream_id(module_db_url)
        async with stream(api, headers={"Last-Event-ID": str(newest)}) as reader:
            incident = open_incident(module_db_url, "from-newest")
            await reader.until(lambda r: bool(r.of(incident)))
            assert all(e.id is not None and e.id > newest for e in reader.events)

    asyncio.run(run())


def test_an_open_stream_does_not_hold_up_shutdown(module_db_url: str, tmp_path: Path) -> None:
    """uvicorn waits for open requests when asked to stop; an endless stream must end."""

    async def run(api: Api) -> float:
        async with stream(api) as reader:
            assert api.process is not None
            asked = time.perf_counter()
            api.process.terminate()
            await reader.until(lambda r: r.ended, timeout=10)
            ended = time.perf_counter() - asked
            print(f"\nstream ended {ended * 1000:.0f} ms after SIGTERM")
            return ended

    with running_api(module_db_url, tmp_path, token_prefix="stream-stop") as api:
        asyncio.run(run(api))
        assert api.process is not None
        # uvicorn re-raises the SIGTERM it handled once it has shut down
        assert api.process.wait(30) in (0, -15)
    # the stream ended by itself: uvicorn did not have to cancel it when its graceful-shutdown
    # timeout ran out (it logs this line when it does)
    assert "timeout graceful shutdown exceeded" not in api.log_text(), api.log_text()


def test_a_subscriber_too_far_behind_is_dropped_after_what_it_has(module_db_url: str) -> None:
    """In process: a broadcaster with room for 3 events, and a client that reads none."""

    async def run() -> None:
        broadcaster = Broadcaster(module_db_url, queue_size=3)
        broadcaster.start()
        try:
            assert await broadcaster.wait_ready(10)
            slow = broadcaster.subscribe(["incident"])
            incident = await asyncio.to_thread(open_incident, module_db_url, "slow-client")
            for _ in range(4):
                await asyncio.to_thread(add_timeline, module_db_url, incident)

            async def gone() -> None:
                while broadcaster.subscribers:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(gone(), ARRIVES_S)
            got = []
            while (event := await slow.next()) is not None:
                got.append(event)
            # what it had queued, in order, then the end; it resumes after the last one
            assert [e.data["event_type"] for e in got] == ["opened", "updated", "updated"]
            assert slow.ended is not None and "Last-Event-ID" in slow.ended
        finally:
            await broadcaster.stop()

    asyncio.run(run())


def test_a_worker_opening_an_incident_streams_it_and_its_throughput(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """End to end: traffic into Kafka, a real worker (with the throughput publisher wired as
    rtmh.worker should wire it), and a client of `rtmh api` that sees both."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE alert_rules SET enabled = name = 'high_error_rate'")
    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 4)
    burst = sim.Scenario(
        "test", "checkout errs", phases=(sim.Phase(0, 30, "checkout", error_ratio=0.5),)
    )
    producer = make_producer(broker)

    def produce(kind: str, key: bytes, value: bytes) -> None:
        producer.produce(topic_prefix + kind, key=key, value=value)

    def traffic() -> None:
        traffic = sim.Traffic(burst, ("checkout", "payments"), seed=7)
        sim.run(produce, lambda: producer.poll(0), traffic, 1000, 30)
        producer.flush(10)

    async def watch(api: Api) -> None:
        async with stream(api) as reader:
            sender = threading.Thread(target=traffic, daemon=True)
            sender.start()
            try:
                await reader.until(
                    lambda r: any(
                        e.event == "incident"
                        and e.data["event_type"] == "opened"
                        and e.data["incident"]["window_key"] == "checkout"
                        for e in r.events
                    ),
                    timeout=60,
                )
                await reader.until(
                    lambda r: any(
                        e.event == "ingest" and e.data["events_per_s"] > 0 for e in r.events
                    ),
                    timeout=10,
                )
            finally:
                sender.join(60)

    cfg = settings_for(db_url, broker, topic_prefix, window_size_s=10, window_slide_s=2)
    worker = build_worker(cfg, db_url, broker)
    publisher = ThroughputPublisher(db_url)
    worker.after_commit.append(publisher.after_commit)
    worker.on_stop.append(publisher.stop)
    publisher.start()
    with (
        running_api(db_url, tmp_path, token_prefix="stream-e2e") as api,
        in_thread(worker),
    ):
        asyncio.run(watch(api))
