"""The embedded broker's front door: a relay between clients and tansu that can hold Produce
requests for a moment, and knows where each partition's log ends.

tansu keeps every message in memory and cannot delete records (its DeleteRecords is
unimplemented in 0.6.0), so the only way to bound its log is to delete the topics and create
them again (rtmh.embedded.log_roll). Deleting a topic loses whatever it holds that no consumer
has committed, and producers outside RTMH keep writing: the roll is lossless only if, for the
moment it takes, no write can complete. Clients reach the broker through this relay (tansu
advertises the relay's address), so the relay can hold every Produce request that arrives
while a roll runs, wait for the ones already sent to be acknowledged, and then know the exact
end of every partition's log from those acknowledgements.

Frames are relayed whole and in order on each connection; only Produce requests and their
responses are read, and the topic ids of Fetch requests (rtmh.embedded.frames). A Produce with
acks=0 is not waited for: its sender chose not to know whether it was written.

A Fetch that names a topic id a roll deleted never gets tansu's answer: tansu answers it with a
CurrentLeader hint that librdkafka 2.16 turns into a metadata update for a NULL topic name, and
the client dies of SIGSEGV (measured; docs/embedded.md). The roll closes every connection so
that clients read the new ids first, but a client may still send the old id (a connection that
was being opened while the roll closed the others, a client whose metadata request and fetch
left together on the new connection). The gate answers such a fetch itself, in its place in the
connection's order: UNKNOWN_TOPIC_ID for each partition, no hint, which makes librdkafka ask for
the metadata again and fetch with the new id. (Closing the connection instead was tried: a
client that sends its metadata request and its fetch together lost the metadata answer with the
connection each time, and fetched the old id again for 15 minutes, measured in the soak.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rtmh.embedded.frames import (
    FETCH,
    PRODUCE,
    FetchRequest,
    ProduceRequest,
    parse_fetch_request,
    parse_produce_request,
    parse_produce_response,
    request_client_id,
    request_header,
    response_correlation,
    unknown_topic_answer,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Partition = tuple[str, int]
#: frames larger than this are not Kafka (a client's fetch.max.bytes is 50 MB by default)
MAX_FRAME = 512 * 1024 * 1024
#: topic ids of deleted logs remembered (three topics a roll: hundreds of rolls); a client that
#: still holds an older one has been disconnected by many rolls since
ROLLED_IDS_KEPT = 3_000


@dataclass
class LogCounts:
    """What the gate saw acknowledged for one partition's current log."""

    #: the offset the next message will get (the log's end): base offset + records of the
    #: latest acknowledged write
    end: int = 0
    batches: int = 0
    size: int = 0


@dataclass(frozen=True, slots=True)
class GateStats:
    logs: dict[Partition, LogCounts]
    #: messages acknowledged since the gate started, across every roll
    acknowledged: int
    rolls: int
    #: Fetch requests that named a rolled topic's old id: the gate answered them itself
    stale_fetches: int = 0

    @property
    def max_batches(self) -> int:
        return max((c.batches for c in self.logs.values()), default=0)

    @property
    def size(self) -> int:
        return sum(c.size for c in self.logs.values())


@dataclass
class _State:
    """Everything the relay's connections share; touched only on the gate's event loop."""

    logs: dict[Partition, LogCounts] = field(default_factory=dict)
    acknowledged: int = 0
    rolls: int = 0
    #: Produce requests sent to the broker and not yet answered: (link, correlation id)
    in_flight: dict[tuple[int, int], ProduceRequest | None] = field(default_factory=dict)
    #: set: Produce requests go through; clear: they wait (a roll is under way)
    open: asyncio.Event = field(default_factory=asyncio.Event)
    #: set: Fetch requests go through; clear: they wait (the topics are being re-created)
    fetching: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    #: Fetch requests sent to the broker and not yet answered, and an event set when none is
    fetches: set[tuple[int, int]] = field(default_factory=set)
    fetches_drained: asyncio.Event = field(default_factory=asyncio.Event)
    #: ids of the topics rolls deleted, oldest first (a dict keeps the order)
    rolled_ids: dict[bytes, None] = field(default_factory=dict)
    stale_fetches: int = 0
    #: the gate's own answers, by (link, correlation id), sent in place of the broker's
    answers: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def forget_logs(self, rolled: set[str], ids: Iterable[bytes]) -> None:
        """``rolled`` topics start again from offset 0; their old ``ids`` are refused from now."""
        self.logs = {p: c for p, c in self.logs.items() if p[0] not in rolled}
        self.rolls += 1
        for topic_id in ids:
            self.rolled_ids[topic_id] = None
        while len(self.rolled_ids) > ROLLED_IDS_KEPT:
            del self.rolled_ids[next(iter(self.rolled_ids))]

    def rolled_fetch(self, frame: bytes) -> FetchRequest | None:
        """The Fetch request in ``frame`` if it names a topic id a roll deleted, else None."""
        if not self.rolled_ids:
            return None
        request = parse_fetch_request(frame)
        if request is None or not any(i in self.rolled_ids for i in request.topic_ids):
            return None
        return request

    def settle(self, key: tuple[int, int], frame: bytes | None) -> None:
        """The answer to one request (None: the connection died first)."""
        if key in self.fetches:
            self.fetches.discard(key)
            if not self.fetches:
                self.fetches_drained.set()
            return
        if key not in self.in_flight:
            return
        request = self.in_flight.pop(key)
        if request is not None and frame is not None:
            self._account(request, frame)
        if not self.in_flight:
            self.drained.set()

    def _account(self, request: ProduceRequest, frame: bytes) -> None:
        answers = parse_produce_response(frame, request.version)
        if answers is None:
            return
        written = {(w.topic, w.partition): w for w in request.writes}
        for answer in answers:
            w = written.get((answer.topic, answer.partition))
            if w is None or answer.error_code != 0 or answer.base_offset < 0:
                continue
            counts = self.logs.setdefault((w.topic, w.partition), LogCounts())
            counts.end = max(counts.end, answer.base_offset + w.records)
            counts.batches += w.batches
            counts.size += w.size
            self.acknowledged += w.records


class Gate:
    """Listens on 127.0.0.1:``port`` and relays to the broker at 127.0.0.1:``upstream_port``,
    from an event loop on a thread of its own. The blocking methods are for other threads."""

    def __init__(self, upstream_port: int, port: int):
        self.upstream_port = upstream_port
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="broker-gate")
        self._server: asyncio.Server | None = None
        self._state: _State | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()
        #: how many times every connection was closed; a link opened during one closes too
        self._severs = 0

    # --- from other threads ------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self._call(self._start(), 10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop(), 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def hold(self, timeout: float) -> dict[Partition, int] | None:
        """Hold every Produce request from now on and wait until those already sent are
        answered; then each partition's log end (only partitions something was written to).
        None when they are not all answered within ``timeout`` (the gate is open again)."""
        return self._call(self._hold(timeout))

    def hold_fetches(self, timeout: float) -> bool:
        """Hold every Fetch request from now on until ``release``, and wait until those already
        sent are answered; False when they are not within ``timeout`` (nothing else changes:
        call ``release``). Fetch names topics by id: a fetch that reaches a topic deleted
        under it gets an answer librdkafka 2.16 crashes on (SIGSEGV, measured)."""
        return self._call(self._hold_fetches(timeout))

    def sever(self) -> None:
        """Close every client connection: a client that reconnects asks for the topics'
        metadata again, and so learns a re-created topic's new id before it fetches."""
        self._call(self._sever(), 10)

    def release(self, rolled: Iterable[str] = (), rolled_ids: Iterable[bytes] = ()) -> None:
        """Let held and new Produce and Fetch requests through; the logs of ``rolled`` topics
        start again from offset 0, and a Fetch naming one of ``rolled_ids`` (their ids before
        the roll, 16 bytes each) is answered by the gate (UNKNOWN_TOPIC_ID), not the broker."""
        self._call(self._release(set(rolled), list(rolled_ids)), 10)

    def stats(self) -> GateStats:
        return self._call(self._stats(), 10)

    # --- on the loop ---------------------------------------------------------------------------
    async def _start(self) -> None:
        self._state = _State()
        self._state.open.set()
        self._state.fetching.set()
        self._state.drained.set()
        self._state.fetches_drained.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # ending a link's pumps ends the link; its handler then closes both sockets
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _hold(self, timeout: float) -> dict[Partition, int] | None:
        state = self._require()
        state.open.clear()
        try:
            await asyncio.wait_for(state.drained.wait(), timeout)
        except TimeoutError:
            state.open.set()
            return None
        return {part: c.end for part, c in state.logs.items()}

    async def _hold_fetches(self, timeout: float) -> bool:
        state = self._require()
        state.fetching.clear()
        try:
            await asyncio.wait_for(state.fetches_drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _sever(self) -> None:
        self._severs += 1
        for pump in list(self._pumps):
            pump.cancel()

    async def _release(self, rolled: set[str], rolled_ids: list[bytes]) -> None:
        state = self._require()
        if rolled:
            state.forget_logs(rolled, rolled_ids)
        state.open.set()
        state.fetching.set()

    async def _stats(self) -> GateStats:
        state = self._require()
        logs = {p: LogCounts(c.end, c.batches, c.size) for p, c in state.logs.items()}
        return GateStats(logs, state.acknowledged, state.rolls, state.stale_fetches)

    def _require(self) -> _State:
        assert self._state is not None, "the gate is not started"
        return self._state

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._relay(next(self._ids), reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError) as err:
            # cancelled: the gate stops; returning (not raising) keeps asyncio's server quiet
            log.debug("broker gate: connection ended: %r", err)
        finally:
            writer.close()
            self._links.discard(task)

    async def _relay(
        self, link: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        state = self._require()
        severs = self._severs
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        if self._severs != severs:  # every connection was closed while this one opened
            up_writer.close()
            return
        requests = asyncio.create_task(self._requests(link, reader, up_writer))
        responses = asyncio.create_task(self._responses(link, up_reader, writer))
        pumps = {requests, responses}
        self._pumps |= pumps
        try:
            # either side closing ends the link: the client sees what it would see without
            # the gate (the broker went away, or it hung up)
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps -= pumps
            up_writer.close()
            for key in [k for k in (*state.in_flight, *state.fetches) if k[0] == link]:
                state.settle(key, None)
            for key in [k for k in state.answers if k[0] == link]:
                del state.answers[key]

    async def _requests(
        self,
        link: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        state = self._require()
        while True:
            size, frame = await _read_frame(reader)
            header = request_header(frame)
            if header is not None and header[0] == FETCH:
                await state.fetching.wait()
                stale = state.rolled_fetch(frame)
                if stale is not None:
                    # still sent on, so that the answers keep their order; the broker's answer
                    # to it is replaced by this one
                    state.answers[(link, header[2])] = unknown_topic_answer(stale)
                    state.stale_fetches += 1
                    log.info(
                        "broker gate: a fetch from %s named a topic deleted by a log roll; "
                        "answered UNKNOWN_TOPIC_ID so that the client reads the new topic ids",
                        request_client_id(frame) or "a client without an id",
                    )
                state.fetches.add((link, header[2]))
                state.fetches_drained.clear()
            if header is not None and header[0] == PRODUCE:
                # held here, the connection's later requests wait behind it: Kafka answers
                # a connection's requests in order, so nothing may overtake
                await state.open.wait()
                request = parse_produce_request(frame)
                if request is None or request.acks != 0:
                    state.in_flight[(link, header[2])] = request
                    state.drained.clear()
            writer.write(size)
            writer.write(frame)
            await writer.drain()

    async def _responses(
        self, link: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        state = self._require()
        while True:
            size, frame = await _read_frame(reader)
            correlation = response_correlation(frame)
            if correlation is not None:
                own = state.answers.pop((link, correlation), None)
                if own is not None:
                    size, frame = len(own).to_bytes(4, "big"), own
                state.settle((link, correlation), frame)
            writer.write(size)
            writer.write(frame)
            await writer.drain()


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    size = await reader.readexactly(4)
    n = int.from_bytes(size, "big", signed=True)
    if not 0 <= n <= MAX_FRAME:
        raise ConnectionError(f"not a Kafka frame (size {n})")
    return size, await reader.readexactly(n)
