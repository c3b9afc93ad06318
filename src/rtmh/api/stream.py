"""The live stream's broadcaster: one per API process, fed by LISTEN rtmh_stream.

007_api.sql's triggers append a ``stream_events`` row for each incident timeline entry and each
notification result and NOTIFY ``rtmh_stream`` with the row's id in the same transaction; the
ingest worker NOTIFYs a JSON throughput gauge (:mod:`rtmh.ingest.throughput`). One dedicated
autocommit connection LISTENs; a notification wakes it to read the rows after the last one it
delivered and fan them out, in id order, to every subscriber's bounded queue. The table is only
read when a NOTIFY says it changed (or, briefly, while an id gap is open: see ``_settle``).

Ids are handed out when a row is inserted but become visible when its transaction commits, so
two writers can commit out of id order: id 11 visible while 10 is still in flight. Delivering 11
and moving on would lose 10 for live clients and for Last-Event-ID resumes alike, so the
broadcaster stops at a gap until the missing id commits (its NOTIFY wakes us), or until every
transaction that was running when the gap was seen has ended (the id was rolled back, for good),
or, bounded, after ``gap_wait_s`` (then a row that still turns up is delivered late). Everything
at or below :attr:`Broadcaster.watermark` is therefore settled, which is what makes replay plus
live exact: a resuming client replays ``(last_event_id, watermark]`` from the table and takes
everything above from its queue.

A subscriber that falls ``queue_size`` events behind is dropped (its stream ends with a comment
and the client resumes with Last-Event-ID), so one slow client never holds the others back. A
lost connection is re-opened with backoff and the broadcaster catches up from its watermark.
Rows older than a day are deleted every ten minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, get_args

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge

from rtmh.db.connect import describe_url
from rtmh.db.queries import load

log = logging.getLogger(__name__)

SQL = load("stream")

CHANNEL: Final = "rtmh_stream"
Kind = Literal["incident", "notification", "ingest"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

#: first and longest wait before re-opening the LISTEN connection
_RECONNECT_FIRST_S: Final = 0.5
_RECONNECT_MAX_S: Final = 10.0
#: how soon an open gap is looked at again when no NOTIFY comes (a rolled-back id sends none)
_GAP_RECHECK_FIRST_S: Final = 0.05
_GAP_RECHECK_MAX_S: Final = 1.0
#: ids given up on are remembered this long, so a straggler is still delivered (late)
_SKIPPED_KEEP_S: Final = 3600.0
_SKIPPED_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event for subscribers: a stream_events row (``id`` set) or an ingest gauge (no id,
    never replayed). ``late``: a row delivered below the watermark (see module docstring)."""

    kind: Kind
    data: dict[str, Any]
    id: int | None = None
    late: bool = False


def event_of_row(
    row_id: int, kind: str, data: dict[str, Any], created_at: datetime, *, late: bool = False
) -> StreamEvent:
    """A stream_events row as an event: its data plus when the row was written."""
    assert kind in KINDS, kind
    return StreamEvent(
        kind,
        {**data, "created_at": created_at.isoformat()},
        row_id,
        late,
    )


class NotReady(Exception):
    """The broadcaster has not reached the database yet: it cannot say where live starts."""


@dataclass(eq=False)
class Subscription:
    """One client's queue. ``watermark``: ids up to it were settled when it subscribed (the
    client replays them from the table); every row event it gets from the queue is above it,
    except a late one."""

    kinds: frozenset[Kind]
    watermark: int
    queue: asyncio.Queue[StreamEvent | None]
    #: why the stream ends (set once): the client fell behind, or the server is stopping
    ended: str | None = None
    #: ids this client replayed that the broadcaster had given up on, so a late delivery of
    #: one of them is not a duplicate
    replayed_late: set[int] = field(default_factory=set)

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        # wakes a reader waiting on an empty queue; a full one is drained first, then ends
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def next(self) -> StreamEvent | None:
        """The next event, or None when the stream has ended (``ended`` says why)."""
        if self.ended is not None and self.queue.empty():
            return None
        return await self.queue.get()


@dataclass
class _Gap:
    """Ids missing right above the watermark while a higher one is visible."""

    after: int  # the watermark when it was seen
    below: int  # the visible id above it
    xmax: int  # the reading snapshot's xmax: every holder of a missing id has an xid below it
    since: float
    recheck_s: float = _GAP_RECHECK_FIRST_S


class _Metrics:
    def __init__(self, registry: CollectorRegistry, subscribers: Collection[Subscription]):
        self.subscribers = Gauge(
            "rtmh_api_stream_subscribers",
            "clients connected to /api/v1/stream",
            registry=registry,
        )
        self.subscribers.set_function(lambda: len(subscribers))
        self.events = Counter(
            "rtmh_api_stream_events",
            "events the stream broadcaster fanned out, by kind",
            ["kind"],
            registry=registry,
        )
        self.dropped = Counter(
            "rtmh_api_stream_dropped_subscribers",
            "clients disconnected for falling too far behind (they resume with Last-Event-ID)",
            registry=registry,
        )
        self.reconnects = Counter(
            "rtmh_api_stream_reconnects",
            "times the broadcaster's LISTEN connection was lost and opened again",
            registry=registry,
        )


class Broadcaster:
    """LISTEN rtmh_stream on a connection of its own; fan events out to subscribers.

    ``start()`` and ``stop()`` from the app's lifespan; ``subscribe()``/``unsubscribe()`` per
    client. Runs on the event loop that started it; nothing here is thread-safe."""

    def __init__(
        self,
        postgres_url: str,
        *,
        queue_size: int = 1000,
        page: int = 500,
        gap_wait_s: float = 5.0,
        retention_s: float = 86_400.0,
        prune_every_s: float = 600.0,
        keepalive_s: float = 15.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.queue_size = queue_size
        self.page = page
        self.gap_wait_s = gap_wait_s
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        #: the routes' heartbeat interval (a comment line), for proxies that cut idle streams
        self.keepalive_s = keepalive_s
        #: the highest id delivered with every id below it settled; None until first connected
        self.watermark: int | None = None
        #: ids given up on (rolled back, or held too long), and when
        self.skipped: dict[int, float] = {}
        self._subscribers: set[Subscription] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gap: _Gap | None = None
        self._late: set[int] = set()
        self._metrics = _Metrics(registry or CollectorRegistry(), self._subscribers)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rtmh-stream")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self._subscribers):
            sub.end("the server is stopping; reconnect with Last-Event-ID")
        self._subscribers.clear()

    async def wait_ready(self, timeout: float) -> bool:
        """Whether the broadcaster has reached the database (waiting up to ``timeout``)."""
        if self._ready.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    # --- subscribers ---------------------------------------------------------------------------
    def subscribe(self, kinds: Iterable[Kind]) -> Subscription:
        """A new queue, receiving from now on. Synchronous, so no event is fanned out between
        reading the watermark and joining the subscribers."""
        if self.watermark is None:
            raise NotReady("the stream has not reached the database yet")
        sub = Subscription(frozenset(kinds), self.watermark, asyncio.Queue(self.queue_size))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _fanout(self, event: StreamEvent) -> None:
        self._metrics.events.labels(event.kind).inc()
        for sub in list(self._subscribers):
            if event.kind not in sub.kinds:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                # it keeps what it has queued (in order, no gap) and resumes after that
                self._subscribers.discard(sub)
                self._metrics.dropped.inc()
                sub.end(
                    f"more than {self.queue_size} events behind; "
                    "reconnect with Last-Event-ID to resume"
                )

    # --- the LISTEN loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        delay = _RECONNECT_FIRST_S
        where = describe_url(self.postgres_url)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.postgres_url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="rtmh-api-stream",
                    # a silently dead peer (no FIN) would otherwise leave us waiting forever
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                )
                async with conn:
                    await conn.execute(SQL.listen)
                    if self.watermark is None:
                        # after LISTEN: whatever commits from now on is notified to us
                        cur = await conn.execute(SQL.newest_id)
                        found = await cur.fetchone()
                        self.watermark = int(found[0]) if found else 0
                        log.info("stream: listening on %s from id %d", where, self.watermark)
                        self._ready.set()
                    else:
                        log.info(
                            "stream: listening on %s again; catching up after id %d",
                            where,
                            self.watermark,
                        )
                    delay = _RECONNECT_FIRST_S
                    await self._listen(conn)
            except (psycopg.Error, OSError) as err:
                self._metrics.reconnects.inc()
                reason = " ".join(str(err).split()) or type(err).__name__
                log.warning(
                    "stream: lost the database connection (%s); trying again in %.1f s",
                    reason,
                    delay,
                )
            except Exception:
                # a bug here must not end the stream for the life of the process
                log.exception("stream: broadcaster failed; starting again in %.1f s", delay)
            # jitter: many API processes restarted together do not reconnect in lockstep
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        wake = True  # catch up first: rows may have committed while we were away
        next_prune = time.monotonic()
        while True:
            if wake or self._gap is not None or self._late:
                await self._catch_up(conn)
            now = time.monotonic()
            if now >= next_prune:
                cur = await conn.execute(SQL.prune, (self.retention_s,))
                if cur.rowcount:
                    log.info("stream: deleted %d events older than a day", cur.rowcount)
                self._forget_skipped(now)
                next_prune = now + self.prune_every_s
            timeout = next_prune - now
            if self._gap is not None:
                timeout = min(timeout, self._gap.recheck_s)
                self._gap.recheck_s = min(self._gap.recheck_s * 2, _GAP_RECHECK_MAX_S)
            wake = False
            async for notify in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                wake |= self._on_notify(notify.payload)
            # a burst arrives as many notifications: take all that are here, read once
            async for notify in conn.notifies(timeout=0):
                wake |= self._on_notify(notify.payload)

    def _on_notify(self, payload: str) -> bool:
        """Handle one payload; True when rows are to be read."""
        if payload.startswith("{"):
            self._on_gauge(payload)
            return False
        try:
            row_id = int(payload)
        except ValueError:
            log.debug("stream: ignoring a NOTIFY %s payload %r", CHANNEL, payload[:100])
            return False
        if row_id in self.skipped:
            self._late.add(row_id)
        return True

    def _on_gauge(self, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            log.debug("stream: ignoring a NOTIFY %s payload %r", CHANNEL, payload[:100])
            return
        if isinstance(data, dict) and data.pop("kind", None) == "ingest":
            self._fanout(StreamEvent("ingest", data))

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Deliver the rows after the watermark, in id order, up to the first open gap."""
        if self._late:
            await self._deliver_late(conn)
        while True:
            assert self.watermark is not None
            cur = await conn.execute(SQL.rows_after, {"after": self.watermark, "limit": self.page})
            rows = await cur.fetchall()
            xmin, xmax = int(rows[0][0]), int(rows[0][1])
            found = [r for r in rows if r[2] is not None]
            for _xmin, _xmax, row_id, kind, data, created_at in found:
                if row_id != self.watermark + 1 and not self._settle(row_id, xmin, xmax):
                    return  # wait for the missing ids (or for their holders to end)
                self._gap = None
                self.watermark = row_id
                self._fanout(event_of_row(row_id, kind, data, created_at))
            if len(found) < self.page:
                return

    def _settle(self, row_id: int, xmin: int, xmax: int) -> bool:
        """Whether to deliver ``row_id`` over the missing ids between the watermark and it:
        their transactions have all ended (so they rolled back: a commit would be visible in
        this very read), or they have been waited for long enough."""
        assert self.watermark is not None
        gap = self._gap
        now = time.monotonic()
        if gap is None or gap.after != self.watermark or gap.below != row_id:
            # new: every transaction that could hold a missing id was running at this read,
            # so has an xid below its xmax
            self._gap = _Gap(self.watermark, row_id, xmax, now)
            return False
        missing = range(self.watermark + 1, row_id)
        if xmin >= gap.xmax:
            log.debug("stream: ids %d..%d were rolled back", missing.start, missing.stop - 1)
        elif now - gap.since >= self.gap_wait_s:
            log.warning(
                "stream: ids %d..%d not committed after %g s; going on without them "
                "(delivered late should they commit)",
                missing.start,
                missing.stop - 1,
                self.gap_wait_s,
            )
        else:
            return False
        for skipped in missing:
            self.skipped[skipped] = now
        return True

    async def _deliver_late(self, conn: psycopg.AsyncConnection[Any]) -> None:
        late, self._late = sorted(self._late), set()
        cur = await conn.execute(SQL.rows_by_id, (late,))
        for row_id, kind, data, created_at in await cur.fetchall():
            self.skipped.pop(row_id, None)
            self._fanout(event_of_row(row_id, kind, data, created_at, late=True))

    def _forget_skipped(self, now: float) -> None:
        horizon = now - _SKIPPED_KEEP_S
        for row_id in [i for i, at in self.skipped.items() if at < horizon]:
            del self.skipped[row_id]
        # a flood of rollbacks must not grow this without bound: keep the newest
        if len(self.skipped) > _SKIPPED_MAX:
            for row_id in sorted(self.skipped)[: len(self.skipped) - _SKIPPED_MAX]:
                del self.skipped[row_id]
