"""`rtmh notifier`: delivers the ``alert_notifications`` outbox, recording every attempt.

One asyncio loop per process:

* **Wake-up**: a dedicated connection LISTENs on ``rtmh_notifications`` (the INSERT trigger
  notifies), so a new row is claimed at once; between notifications the loop sleeps until the
  earliest ``next_attempt_at`` (retries coming due), at most ``poll_cap_s``, which also bounds
  how long an expired lease waits to be taken over.
* **Settings**: :class:`NotifierOptions`, built from :class:`rtmh.config.Settings`
  (RTMH_NOTIFY_*, RTMH_PUBLIC_URL, RTMH_ALLOWED_TARGETS) by :meth:`NotifierOptions.from_settings`;
  run it as ``rtmh notifier``.
* **Claim**: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` takes up to the
  number of free delivery slots (see :mod:`rtmh.notify.outbox`). Any number of notifiers can run
  against one database: a row is only ever claimed by one of them per attempt. The lease of a
  row is ``channels.max_attempt_seconds(channel) + lease_margin_s``, so it cannot expire while
  the attempt is still allowed to run.
* **Deliver**: every claimed row gets its own task at once (``concurrency`` at most), sharing
  one ``httpx.AsyncClient`` that connects only where the target policy allows
  (:func:`rtmh.notify.targets.guarded_client`; a refused target is a permanent failure).
  Channels and active silences are read from the database on every claim, so edits apply to
  the next notification without a restart.
* **Record**: ``sent``; ``failed`` with ``next_attempt_at = now + backoff`` (exponential, equal
  jitter, Retry-After honoured); ``dead`` when attempts are exhausted, the failure is permanent,
  or the channel is missing, disabled or misconfigured; ``suppressed`` when an active silence
  matches (checked again at send time: the silence may be newer than the row). Final outcomes
  also append a ``notified`` row to the incident's timeline. Nothing is dropped silently: a
  row whose outcome cannot be recorded stays ``sending`` and is retried when its lease expires.
* **Stop** (SIGTERM/SIGINT): no new claims; in-flight attempts finish (up to ``stop_timeout_s``,
  or at once on a second signal) and are recorded; attempts cut short go back to ``pending``.

Secrets never reach a log line or ``last_error``: the channel layer scrubs what it returns, and
the few errors made here name fields and types, never values.

Over 500 lines on purpose: the loop above is one object whose states (wake, claim, deliver,
record, stop) share its connections and in-flight set; rendering and sending live in
:mod:`rtmh.notify.channels`, the SQL in :mod:`rtmh.notify.outbox`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import psycopg

from rtmh.config import Settings
from rtmh.db.connect import normalise_url
from rtmh.notify import metrics, outbox
from rtmh.notify.backoff import next_delay
from rtmh.notify.channels import (
    Channel,
    ChannelConfigError,
    DeliveryResult,
    deliver,
    max_attempt_seconds,
)
from rtmh.notify.channels.base import scrub
from rtmh.notify.outbox import ChannelRow, ClaimedRow
from rtmh.notify.targets import TargetPolicy, guarded_client
from rtmh.records import IncidentSnapshot, Notification
from rtmh.rules.silences import Silence, matching_silence

log = logging.getLogger(__name__)

#: lease of a row whose channel is unknown at claim time (it is recorded dead within ms)
DEFAULT_LEASE_S: Final = 30.0
#: reconnect delay after PostgreSQL went away (doubles up to the maximum)
_RECONNECT_MIN_S: Final = 0.5
_RECONNECT_MAX_S: Final = 10.0
#: expired leases beyond max_attempts are reaped at most this often
_REAP_EVERY_S: Final = 1.0
#: pause when a due row was locked by another notifier's claim
_LOCKED_RETRY_S: Final = 0.01


def _default(setting: str) -> Any:
    # The defaults are Settings' own: one place says what an unset RTMH_NOTIFY_* means.
    return Settings.model_fields[setting].default


@dataclass(frozen=True, slots=True)
class NotifierOptions:
    """What one :class:`Notifier` works with: the notifier's settings (see ``from_settings``),
    given directly when a notifier is embedded (tests, benchmarks)."""

    #: deliveries in flight at once (also the most rows one claim takes)
    concurrency: int = _default("notify_concurrency")
    #: rows per claim statement at most
    batch_size: int = _default("notify_batch_size")
    #: backoff after failed attempt n: base * 2**(n-1), capped, equal jitter
    backoff_base_s: float = _default("notify_backoff_base_s")
    backoff_cap_s: float = _default("notify_backoff_cap_s")
    #: lease = the channel's longest possible attempt + this margin
    lease_margin_s: float = _default("notify_lease_margin_s")
    #: the longest sleep without a notification (retries coming due, expired leases)
    poll_cap_s: float = _default("notify_poll_cap_s")
    #: on stop, how long in-flight attempts may still take before they are cut short
    stop_timeout_s: float = _default("notify_stop_timeout_s")
    #: the dashboard's public URL; incident links are ``{public_url}/incidents/{id}``
    public_url: str = _default("public_url")
    #: stored in claimed_by; default ``host:pid:random``
    notifier_id: str = field(default_factory=lambda: default_notifier_id())
    #: where HTTP channels may connect (RTMH_ALLOWED_TARGETS); the default refuses loopback
    #: and private addresses, so a notifier embedded for a loopback receiver must allow it
    targets: TargetPolicy = field(default_factory=TargetPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierOptions:
        """RTMH_NOTIFY_*, RTMH_PUBLIC_URL and RTMH_ALLOWED_TARGETS, read by :class:`Settings`.

        Raises ValueError naming RTMH_ALLOWED_TARGETS when an entry of it is unusable.
        """
        return cls(
            concurrency=settings.notify_concurrency,
            batch_size=settings.notify_batch_size,
            backoff_base_s=settings.notify_backoff_base_s,
            backoff_cap_s=settings.notify_backoff_cap_s,
            lease_margin_s=settings.notify_lease_margin_s,
            poll_cap_s=settings.notify_poll_cap_s,
            stop_timeout_s=settings.notify_stop_timeout_s,
            public_url=settings.public_url,
            targets=TargetPolicy.from_settings(settings),
        )


def default_notifier_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class _ChannelEntry:
    """A channel as the notifier sees it for one claim: usable, or why not."""

    channel: Channel | None
    problem: str | None
    lease: float


@dataclass(slots=True)
class _Cycle:
    """What one claim works with: channels and active silences as of that claim."""

    channels: dict[str, _ChannelEntry]
    silences: list[Silence] | None = None


def _channel_entries(rows: Mapping[str, ChannelRow], margin: float) -> dict[str, _ChannelEntry]:
    entries: dict[str, _ChannelEntry] = {}
    for name, row in rows.items():
        try:
            channel = Channel.from_row(row.as_mapping())
        except ChannelConfigError as err:
            # The message names the field, never its value.
            entries[name] = _ChannelEntry(None, f"channel misconfigured: {err}", DEFAULT_LEASE_S)
            continue
        lease = max_attempt_seconds(channel) + margin
        if not row.enabled:
            entries[name] = _ChannelEntry(None, f"channel {name!r} is disabled", lease)
        else:
            entries[name] = _ChannelEntry(channel, None, lease)
    return entries


class Notifier:
    """The delivery loop. ``await run()`` in an event loop; ``request_stop()`` from anywhere."""

    def __init__(self, url: str, options: NotifierOptions | None = None) -> None:
        self.url = normalise_url(url)
        self.options = options or NotifierOptions()
        self.id = self.options.notifier_id
        #: set once LISTEN is active and the first claim ran (tests and benchmarks wait on it)
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stop_requests = 0
        self._hurry = False
        self._lock = threading.Lock()
        self._work: psycopg.AsyncConnection[Any] | None = None
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None
        self._listen_error: BaseException | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._next_reap = 0.0

    # --- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming and finish in-flight attempts; a second call cuts them short.

        Thread-safe and signal-safe (call it from a signal handler or another thread).
        """
        with self._lock:
            self._stop_requests += 1
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_stop_request)

    def _on_stop_request(self) -> None:
        assert self._stop is not None and self._wake is not None
        if self._stop.is_set():
            self._hurry = True
        self._stop.set()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # --- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until :meth:`request_stop`; reconnects when PostgreSQL goes away."""
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            pending_stops = self._stop_requests
        if pending_stops:
            self._stop.set()
            self._hurry = pending_stops > 1
        log.info("notifier %s starting", self.id)
        limits = httpx.Limits(
            max_connections=self.options.concurrency,
            max_keepalive_connections=self.options.concurrency,
        )
        delay = _RECONNECT_MIN_S
        try:
            async with guarded_client(self.options.targets, limits=limits) as client:
                while not self._stop.is_set():
                    try:
                        await self._connect()
                        delay = _RECONNECT_MIN_S
                        await self._serve(client)
                    except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                        log.warning(
                            "notifier: PostgreSQL unavailable (%s); reconnecting in %.1fs",
                            " ".join(str(err).split()) or type(err).__name__,
                            delay,
                        )
                        await self._close_listener()
                        await self._sleep(delay)
                        delay = min(delay * 2, _RECONNECT_MAX_S)
                await self._drain()
        finally:
            await self._close_listener()
            await self._close_work()
            with self._lock:
                self._loop = None
            log.info("notifier %s stopped", self.id)

    async def _connect(self) -> None:
        if self._work is None or self._work.closed or self._work.broken:
            await self._close_work()
            self._work = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
        await self._close_listener()
        self._listen_conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=5
        )
        await outbox.listen(self._listen_conn)
        self._listen_error = None

    async def _serve(self, client: httpx.AsyncClient) -> None:
        assert self._stop is not None and self._wake is not None
        listener = asyncio.create_task(self._listen(), name="notifier-listen")
        try:
            while not self._stop.is_set():
                self._wake.clear()
                if self._listen_error is not None:
                    raise psycopg.OperationalError(
                        f"listening connection lost: {self._listen_error}"
                    ) from self._listen_error
                free = self.options.concurrency - len(self._inflight)
                limit = min(free, self.options.batch_size)
                claimed = await self._claim_and_start(client, limit) if limit > 0 else 0
                self.ready.set()
                if limit > 0 and claimed == limit:
                    continue  # a full claim: more may be due right now
                await self._reap()
                await self._wait(await self._next_wait(claimed))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self) -> None:
        assert self._listen_conn is not None and self._wake is not None
        try:
            async for _ in self._listen_conn.notifies():
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the main loop reconnects
            self._listen_error = err
            self._wake.set()

    async def _next_wait(self, claimed: int) -> float:
        cap = self.options.poll_cap_s
        if len(self._inflight) >= self.options.concurrency:
            return cap  # a finishing delivery wakes the loop
        due = await outbox.seconds_until_next_due(self._db)
        if due is None:
            return cap
        if due <= 0 and not claimed:
            # Due but not claimable: another notifier is claiming it right now. Do not spin.
            return min(cap, _LOCKED_RETRY_S)
        return min(cap, max(0.0, due))

    async def _wait(self, seconds: float) -> None:
        assert self._wake is not None
        if seconds <= 0 or self._wake.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    async def _reap(self) -> None:
        now = time.monotonic()
        if now < self._next_reap:
            return
        self._next_reap = now + _REAP_EVERY_S
        for notification_id, channel in await outbox.reap_exhausted(self._db):
            log.error("notification %d: dead (%s)", notification_id, outbox.REAPED_ERROR)
            metrics.DEAD.labels(channel).inc()

    # --- claim and deliver -------------------------------------------------------------------

    async def _claim_and_start(self, client: httpx.AsyncClient, limit: int) -> int:
        entries = _channel_entries(
            await outbox.load_channels(self._db), self.options.lease_margin_s
        )
        leases = {name: entry.lease for name, entry in entries.items()}
        rows = await outbox.claim_due(self._db, self.id, limit, leases, DEFAULT_LEASE_S)
        if not rows:
            return 0
        cycle = _Cycle(entries, await outbox.load_silences(self._db))
        for row in rows:
            task = asyncio.create_task(self._attempt(row, cycle, client), name=f"notify-{row.id}")
            self._inflight[row.id] = task
        return len(rows)

    async def _attempt(self, row: ClaimedRow, cycle: _Cycle, client: httpx.AsyncClient) -> None:
        try:
            await self._process(row, cycle, client)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # recording failed (PostgreSQL gone): the lease brings it back
            log.error(
                "notification %d: could not record the outcome of attempt %d (%s: %s); the row "
                "is retried when its lease expires",
                row.id,
                row.attempts,
                type(err).__name__,
                " ".join(str(err).split()),
            )
        finally:
            self._inflight.pop(row.id, None)
            if self._wake is not None:
                self._wake.set()

    @property
    def _db(self) -> psycopg.AsyncConnection[Any]:
        conn = self._work
        if conn is None:
            raise psycopg.OperationalError("not connected to PostgreSQL")
        return conn

    async def _process(self, row: ClaimedRow, cycle: _Cycle, client: httpx.AsyncClient) -> None:
        entry = cycle.channels.get(row.channel)
        if entry is None:
            known = ", ".join(sorted(cycle.channels)) or "none"
            await self._dead(row, f"channel {row.channel!r} does not exist (known: {known})")
            return
        if entry.channel is None:
            await self._dead(row, entry.problem or f"channel {row.channel!r} is unusable")
            return
        channel = entry.channel
        try:
            notification = self._notification(row)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            await self._dead(row, f"payload is not a valid notification: {type(err).__name__}")
            return
        if notification.event != "test" and cycle.silences:
            incident = notification.incident
            silence = matching_silence(
                cycle.silences,
                incident.rule_name,
                incident.window_key,
                incident.severity,
                datetime.now(UTC),
            )
            if silence is not None:
                if await outbox.record_suppressed(self._db, row, self.id, silence):
                    metrics.SUPPRESSED.labels(row.channel).inc()
                    log.info("notification %d: suppressed by silence %d", row.id, silence)
                else:
                    self._lost(row)
                return
        started = time.monotonic()
        try:
            result = await deliver(channel, notification, client)
        except Exception as err:  # a bug, not the receiver: keep the row, retry later
            message = scrub(f"{type(err).__name__}: {err}", channel.secret_values())
            log.error("notification %d: delivery raised %s", row.id, message)
            result = DeliveryResult.failure(f"internal error: {message}", retryable=True)
        metrics.ATTEMPT_SECONDS.labels(channel.type).observe(time.monotonic() - started)
        await self._record(row, channel, result)

    def _notification(self, row: ClaimedRow) -> Notification:
        base = self.options.public_url.rstrip("/")
        if row.event == "test" and not (row.payload or {}).get("incident"):
            return Notification.test(
                row.idempotency_key,
                now=row.created_at,
                notification_id=row.id,
                attempt=row.attempts,
                dashboard_url=f"{base}/",
            )
        snapshot = IncidentSnapshot.from_dict(row.payload["incident"])
        incident_id = row.incident_id or snapshot.id
        return Notification.from_row(
            {"id": row.id, "idempotency_key": row.idempotency_key, "event": row.event},
            snapshot,
            attempt=row.attempts,
            dashboard_url=f"{base}/incidents/{incident_id}",
        )

    async def _record(self, row: ClaimedRow, channel: Channel, result: DeliveryResult) -> None:
        if result.ok:
            recorded = await outbox.record_sent(
                self._db, row, self.id, result.http_status, result.response_excerpt
            )
            if recorded:
                metrics.SENT.labels(row.channel).inc()
                latency = (datetime.now(UTC) - row.created_at).total_seconds()
                metrics.DELIVERY_LATENCY.labels(channel.type).observe(max(0.0, latency))
            else:
                self._lost(row)
            return
        error = result.error or "delivery failed"
        if result.retryable and row.attempts < row.max_attempts:
            delay = next_delay(
                row.attempts,
                base=self.options.backoff_base_s,
                cap=self.options.backoff_cap_s,
                retry_after=result.retry_after_seconds,
            )
            recorded = await outbox.record_failed(
                self._db,
                row,
                self.id,
                delay=delay,
                error=error,
                http_status=result.http_status,
                response_body=result.response_excerpt,
            )
            if recorded:
                metrics.FAILED.labels(row.channel).inc()
            else:
                self._lost(row)
            return
        if result.retryable:
            error = f"{error} (gave up after {row.attempts} attempts)"
        await self._dead(row, error, result.http_status, result.response_excerpt)

    async def _dead(
        self,
        row: ClaimedRow,
        error: str,
        http_status: int | None = None,
        response_body: str | None = None,
    ) -> None:
        if await outbox.record_dead(
            self._db,
            row,
            self.id,
            error=error,
            http_status=http_status,
            response_body=response_body,
        ):
            metrics.DEAD.labels(row.channel).inc()
            log.warning(
                "notification %d (%s to %s) dead after %d attempt(s): %s",
                row.id,
                row.event,
                row.channel,
                row.attempts,
                error,
            )
        else:
            self._lost(row)

    def _lost(self, row: ClaimedRow) -> None:
        log.warning(
            "notification %d: attempt %d was taken over by another notifier (lease expired); "
            "its outcome is not recorded",
            row.id,
            row.attempts,
        )

    # --- stopping --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let in-flight attempts finish and record; cut short and release what is left."""
        tasks = set(self._inflight.values())
        if not tasks:
            return
        log.info("notifier: waiting for %d in-flight deliveries", len(tasks))
        deadline = time.monotonic() + (0.0 if self._hurry else self.options.stop_timeout_s)
        while tasks and not self._hurry and time.monotonic() < deadline:
            timeout = max(0.0, min(0.2, deadline - time.monotonic()))
            _, tasks = await asyncio.wait(tasks, timeout=timeout)
        if not tasks:
            return
        ids = [row_id for row_id, task in self._inflight.items() if task in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._work is None or self._work.closed or self._work.broken:
            return  # the leases expire by themselves
        try:
            released = await outbox.release_claimed(self._work, self.id, ids)
        except psycopg.Error as err:
            log.warning("notifier: could not release %d rows (%s); leases expire", len(ids), err)
            return
        log.info("notifier: %d unfinished deliveries put back to pending", len(released))

    async def _close_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None and not conn.closed:
            await conn.close()

    async def _close_work(self) -> None:
        conn, self._work = self._work, None
        if conn is not None and not conn.closed:
            await conn.close()


def serve(url: str, options: NotifierOptions | None = None) -> None:
    """Run a notifier in this process until SIGTERM/SIGINT (a second signal hurries it)."""
    notifier = Notifier(url, options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, notifier, sig)
        try:
            await notifier.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())


def _on_signal(notifier: Notifier, sig: signal.Signals) -> None:
    log.info("%s received: finishing in-flight deliveries", sig.name)
    notifier.request_stop()


class NotifierThread:
    """A notifier on its own event loop in a background thread (embedding, tests, benchmarks).

    ``with NotifierThread(url, options) as n:`` starts it and waits until it listens; leaving
    the block stops it gracefully.
    """

    def __init__(self, url: str, options: NotifierOptions | None = None) -> None:
        self.notifier = Notifier(url, options)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="rtmh-notifier", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.notifier.run())
        except BaseException as err:
            self.error = err
            log.exception("notifier thread failed")

    def start(self, ready_timeout: float = 10.0) -> NotifierThread:
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self.notifier.ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"notifier did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.notifier.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("notifier thread did not stop")

    def __enter__(self) -> NotifierThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
