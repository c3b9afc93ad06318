"""Just enough of the Kafka protocol for the embedded broker's gate (rtmh.embedded.gate): which
partitions a Produce request writes, how many records and batches, whether it waits for an
acknowledgement, and the offsets the broker's answer gives them; and which topic ids a Fetch
request names.

Pure functions over one frame (the bytes after the 4-byte size). Anything they cannot read is
``None``, never an exception: the gate still relays the frame; it only knows less about it.
Field layouts follow the protocol's ProduceRequest/ProduceResponse/FetchRequest schemas; Produce
versions 9 and later, and Fetch versions 12 and later, are "flexible" (compact lengths as
unsigned varints, tagged fields).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

PRODUCE = 0
FETCH = 1
#: the first flexible version of Produce (compact encodings, tagged fields)
FLEXIBLE_FROM = 9
#: from version 13 a topic is named by its id; the gate does not follow those
NAMED_UNTIL = 12
#: from version 13 a Fetch names each topic by its 16-byte id (flexible from 12)
FETCH_BY_ID_FROM = 13
#: the error code for a topic id the broker does not know
UNKNOWN_TOPIC_ID = 100
#: RecordBatch (magic 2): base offset 8, length 4, leader epoch 4, magic 1, crc 4,
#: attributes 2, last offset delta 4, timestamps 8 + 8, producer id 8, epoch 2, sequence 4
_BATCH_RECORDS_AT = 57
_BATCH_LENGTH_AT = 8
_BATCH_OVERHEAD = 12


class _Short(Exception):
    """The frame ends before the field: not a layout this module reads."""


class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes, at: int = 0):
        self.data = data
        self.at = at

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise _Short
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big", signed=True)

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise _Short

    def length(self, flexible: bool, size: int = 2) -> int:
        """A string/bytes/array length; -1 for null."""
        return self.uvarint() - 1 if flexible else self.number(size)

    def string(self, flexible: bool) -> str | None:
        n = self.length(flexible)
        return None if n < 0 else self.take(n).decode("utf-8", "replace")

    def skip_tags(self, flexible: bool) -> None:
        if not flexible:
            return
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


@dataclass(frozen=True, slots=True)
class Written:
    """What one Produce request writes to one partition."""

    topic: str
    partition: int
    records: int
    batches: int
    size: int


@dataclass(frozen=True, slots=True)
class ProduceRequest:
    version: int
    correlation_id: int
    #: 0: the client asked for no acknowledgement (fire and forget)
    acks: int
    writes: tuple[Written, ...]


@dataclass(frozen=True, slots=True)
class Appended:
    """The broker's answer for one partition of a Produce request."""

    topic: str
    partition: int
    error_code: int
    base_offset: int


def request_header(frame: bytes) -> tuple[int, int, int] | None:
    """(api key, api version, correlation id) of a request frame."""
    if len(frame) < 8:
        return None
    return (
        int.from_bytes(frame[0:2], "big", signed=True),
        int.from_bytes(frame[2:4], "big", signed=True),
        int.from_bytes(frame[4:8], "big", signed=True),
    )


def request_client_id(frame: bytes) -> str | None:
    """The client id a request frame carries (None: absent or unreadable)."""
    try:
        return _Reader(frame, 8).string(False)
    except _Short:
        return None


def response_correlation(frame: bytes) -> int | None:
    return int.from_bytes(frame[0:4], "big", signed=True) if len(frame) >= 4 else None


def count_batches(records: bytes) -> tuple[int, int]:
    """(records, batches) in a produce request's record set of v2 RecordBatches."""
    at = count = batches = 0
    while at + _BATCH_RECORDS_AT + 4 <= len(records):
        length = int.from_bytes(records[at + _BATCH_LENGTH_AT : at + 12], "big", signed=True)
        count += int.from_bytes(
            records[at + _BATCH_RECORDS_AT : at + _BATCH_RECORDS_AT + 4], "big", signed=True
        )
        batches += 1
        at += _BATCH_OVERHEAD + max(length, 0)
    return count, batches


def parse_produce_request(frame: bytes) -> ProduceRequest | None:
    """The partitions a Produce request (versions 3 to 12) writes; None for anything else."""
    header = request_header(frame)
    if header is None or header[0] != PRODUCE or not 3 <= header[1] <= NAMED_UNTIL:
        return None
    _, version, correlation = header
    flexible = version >= FLEXIBLE_FROM
    r = _Reader(frame, 8)
    try:
        r.string(False)  # client id: a classic nullable string in every header version
        r.skip_tags(flexible)
        r.string(flexible)  # transactional id
        acks = r.number(2)
        r.number(4)  # timeout
        writes: list[Written] = []
        for _ in range(max(r.length(flexible, 4), 0)):
            topic = r.string(flexible) or ""
            for _ in range(max(r.length(flexible, 4), 0)):
                partition = r.number(4)
                size = r.length(flexible, 4)
                records = r.take(size) if size > 0 else b""
                count, batches = count_batches(records)
                writes.append(Written(topic, partition, count, batches, len(records)))
                r.skip_tags(flexible)
            r.skip_tags(flexible)
    except _Short:
        return None
    return ProduceRequest(version, correlation, acks, tuple(writes))


def parse_produce_response(frame: bytes, version: int) -> list[Appended] | None:
    """Each partition's error code and base offset from a Produce response of ``version``."""
    if not 3 <= version <= NAMED_UNTIL:
        return None
    flexible = version >= FLEXIBLE_FROM
    r = _Reader(frame, 4)
    try:
        r.skip_tags(flexible)  # response header v1
        found: list[Appended] = []
        for _ in range(max(r.length(flexible, 4), 0)):
            topic = r.string(flexible) or ""
            for _ in range(max(r.length(flexible, 4), 0)):
                partition = r.number(4)
                error_code = r.number(2)
                base_offset = r.number(8)
                found.append(Appended(topic, partition, error_code, base_offset))
                r.number(8)  # log append time (v2+)
                r.number(8)  # log start offset (v5+)
                if version >= 8:
                    for _ in range(max(r.length(flexible, 4), 0)):
                        r.number(4)  # batch index
                        r.string(flexible)  # its error message
                        r.skip_tags(flexible)
                    r.string(flexible)  # error message
                r.skip_tags(flexible)
            r.skip_tags(flexible)
    except _Short:
        return None
    return found


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """What a Fetch request (version 13 or later) asks for: partitions of topics named by id."""

    version: int
    correlation_id: int
    #: (topic id, its partitions), in the request's order
    topics: tuple[tuple[bytes, tuple[int, ...]], ...]

    @property
    def topic_ids(self) -> tuple[bytes, ...]:
        return tuple(topic_id for topic_id, _ in self.topics)


def parse_fetch_request(frame: bytes) -> FetchRequest | None:
    """The topics and partitions a Fetch request (version 13 or later) fetches; None for
    anything else (an older Fetch names its topics, and a name always finds the current log)."""
    header = request_header(frame)
    if header is None or header[0] != FETCH or header[1] < FETCH_BY_ID_FROM:
        return None
    _, version, correlation = header
    r = _Reader(frame, 8)
    try:
        r.string(False)  # client id
        r.skip_tags(True)
        # replica id (until v14), max wait, min bytes, max bytes, isolation level, session id
        # and epoch
        r.take((4 if version <= 14 else 0) + 4 + 4 + 4 + 1 + 4 + 4)
        topics: list[tuple[bytes, tuple[int, ...]]] = []
        for _ in range(max(r.length(True), 0)):
            topic_id = r.take(16)
            partitions: list[int] = []
            for _ in range(max(r.length(True), 0)):
                partitions.append(r.number(4))
                # current leader epoch, fetch offset, last fetched epoch, log start offset,
                # partition max bytes
                r.take(4 + 8 + 4 + 8 + 4)
                r.skip_tags(True)
            topics.append((topic_id, tuple(partitions)))
            r.skip_tags(True)
    except _Short:
        return None
    return FetchRequest(version, correlation, tuple(topics))


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def unknown_topic_answer(request: FetchRequest) -> bytes:
    """A Fetch response frame (without its size) answering every partition of ``request`` with
    UNKNOWN_TOPIC_ID and nothing else: what a client must get for a topic id that no longer
    exists. librdkafka then asks for the topics' metadata again, learns the new ids and fetches
    with them; unlike tansu's own answer it carries no CurrentLeader hint, which is what
    librdkafka 2.16 crashes on (rtmh.embedded.gate)."""
    empty = _uvarint(1)  # a compact array or byte string of length 0
    no_tags = _uvarint(0)
    partition = (
        UNKNOWN_TOPIC_ID.to_bytes(2, "big", signed=True)
        + (-1).to_bytes(8, "big", signed=True) * 3  # high watermark, last stable, log start
        + empty  # aborted transactions
        + (-1).to_bytes(4, "big", signed=True)  # preferred read replica
        + empty  # records
        + no_tags
    )
    out = bytearray(request.correlation_id.to_bytes(4, "big", signed=True) + no_tags)
    out += bytes(4 + 2 + 4)  # throttle time, error code, session id: all 0
    out += _uvarint(len(request.topics) + 1)
    for topic_id, partitions in request.topics:
        out += topic_id + _uvarint(len(partitions) + 1)
        for index in partitions:
            out += index.to_bytes(4, "big", signed=True) + partition
        out += no_tags
    out += no_tags
    return bytes(out)


def topic_id_bytes(text: str) -> bytes:
    """A topic id as the protocol carries it (16 bytes), from the text Kafka tools print
    (URL-safe base64 without padding, what rtmh.kafka.client.topic_ids gives)."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != 16:
        raise ValueError(f"not a topic id: {text!r}")
    return raw
