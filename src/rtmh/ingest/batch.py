"""One batch of consumed messages, decoded and sorted into what the checkpoint writes.

Pure: no I/O. The worker adds messages as they arrive; the checkpoint writes the batch in one
transaction (see ``store.write_batch_exactly_once``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from rtmh.records import DecodedMessage, DecodedRecord, KafkaMessage, Rejected

Partition = tuple[str, int]  # (topic, partition)


def message_digest(msg: KafkaMessage) -> bytes:
    """Fingerprint of one message, stored with the offset after it: reading the message back on
    assignment and comparing fingerprints tells a reset log from an intact one, where watermarks
    cannot be trusted (DESIGN.md)."""
    h = hashlib.blake2b(digest_size=16)
    h.update((msg.timestamp_ms or 0).to_bytes(8, "big", signed=True))
    for part in (msg.key, msg.value):
        h.update(len(part).to_bytes(8, "big") if part is not None else b"\xff" * 8)
        h.update(part or b"")
    return h.digest()


@dataclass(slots=True)
class PartitionProgress:
    """A partition's part of a batch: where it starts, where it ends (the next offset to store
    and the last message's digest), and whether its offsets ever went backwards."""

    generation: int
    next_offset: int
    last_digest: bytes
    first_offset: int = 0
    #: the first offset that was not after the one before it (the position moved back), if any
    rewound_at: int | None = None


@dataclass(slots=True)
class Batch:
    records: list[tuple[KafkaMessage, DecodedRecord]] = field(default_factory=list)
    rejected: list[tuple[KafkaMessage, Rejected]] = field(default_factory=list)
    #: results held: records and rejections (an OTLP message adds one per record, an empty
    #: request one), what RTMH_BATCH_MAX_MESSAGES bounds; ``messages`` counts the messages
    size: int = 0
    messages: int = 0
    #: per partition: (generation, last message added); ``progress`` is derived from it on demand,
    #: so the digest is computed once per partition, not per message (~1 µs a message, measured)
    _tails: dict[Partition, tuple[int, KafkaMessage]] = field(
        default_factory=dict, init=False, repr=False
    )
    #: per partition: the first offset added, and the first one that went backwards
    _heads: dict[Partition, int] = field(default_factory=dict, init=False, repr=False)
    _rewound: dict[Partition, int] = field(default_factory=dict, init=False, repr=False)
    _progress: dict[Partition, PartitionProgress] | None = field(
        default=None, init=False, repr=False
    )

    def add(self, msg: KafkaMessage, result: DecodedMessage, generation: int) -> None:
        """Add one message: its record or rejection, or each of its records (OTLP; none for an
        empty request, whose offset still counts)."""
        if type(result) is DecodedRecord:
            self.records.append((msg, result))
            self.size += 1
        elif type(result) is list:
            for one in result:
                if type(one) is DecodedRecord:
                    self.records.append((msg, one))
                else:
                    assert isinstance(one, Rejected)
                    self.rejected.append((msg, one))
            self.size += len(result) or 1
        else:
            assert isinstance(result, Rejected)
            self.rejected.append((msg, result))
            self.size += 1
        self.messages += 1
        part = (msg.topic, msg.partition)
        tail = self._tails.get(part)
        if tail is None:
            self._heads[part] = msg.offset
        elif msg.offset <= tail[1].offset and part not in self._rewound:
            self._rewound[part] = msg.offset
        self._tails[part] = (generation, msg)
        self._progress = None

    @property
    def progress(self) -> dict[Partition, PartitionProgress]:
        """Where each partition's part of the batch ends: generation, next offset, last digest."""
        if self._progress is None:
            self._progress = {
                part: PartitionProgress(
                    generation,
                    msg.offset + 1,
                    message_digest(msg),
                    self._heads[part],
                    self._rewound.get(part),
                )
                for part, (generation, msg) in self._tails.items()
            }
        return self._progress

    def drop_partitions(self, lost: set[Partition]) -> None:
        """Forget what was read from partitions this worker no longer owns."""
        self.records = [(m, r) for m, r in self.records if (m.topic, m.partition) not in lost]
        self.rejected = [(m, r) for m, r in self.rejected if (m.topic, m.partition) not in lost]
        for part in lost:
            self._tails.pop(part, None)
            self._heads.pop(part, None)
            self._rewound.pop(part, None)
        self._progress = None
        self.size = len(self.records) + len(self.rejected)
        held = {(m.topic, m.partition, m.offset) for m, _ in self.records}
        held.update((m.topic, m.partition, m.offset) for m, _ in self.rejected)
        self.messages = len(held)

    def absorb(self, later: Batch) -> None:
        """Append a batch read after this one (when this one could not be committed, so the
        two must be committed together, in order)."""
        self.records.extend(later.records)
        self.rejected.extend(later.rejected)
        for part, head in later._heads.items():
            tail = self._tails.get(part)
            if tail is None:
                self._heads[part] = head
            elif head <= tail[1].offset:
                self._rewound.setdefault(part, head)
        for part, offset in later._rewound.items():
            self._rewound.setdefault(part, offset)
        self._tails.update(later._tails)
        self._progress = None
        self.size += later.size
        self.messages += later.messages

    def __len__(self) -> int:
        return self.size


# --- group commit: when the poll loop hands a batch to the writer ------------------------------
#: how long a batch waits for more once the writer is free. The writer is free only when traffic
#: is light (under load a commit is always in flight and the batch grows meanwhile), so this is
#: all the batching light traffic gets: enough for the rest of one fetch response, no more.
BATCH_LINGER_S = 0.002
#: how often the poll loop looks whether the commit in flight is done while it holds a batch
#: (poll() cannot wake on it); a commit takes 5-50 ms, so a few looks each
BUSY_LOOK_S = 0.002
#: the longest wait for a first message when nothing is held: bounds how late the loop's timed
#: chores run, and how late it acts on a lost broker. librdkafka reports that through error_cb
#: from inside poll(), which then waits on: at 0.5 s, the embedded broker's log roll (it closes
#: every connection, with writes held, so the loop is idle) cost the worker 0.38 s of its
#: ~0.77 s pause (measured with rtmh bench detect). A look costs microseconds.
IDLE_WAIT_S = 0.05


def hand_over_due(
    size: int, age_s: float, writer_busy: bool, *, max_records: int, max_age_s: float
) -> bool:
    """Whether the batch goes to the writer now (group commit).

    As soon as the writer is free (after a linger), so light traffic is committed within
    milliseconds; while a commit is in flight the batch grows, so heavy traffic gets big batches
    and full throughput without a setting to tune. RTMH_BATCH_MAX_MESSAGES / _MS stay as caps:
    a batch that reaches one is handed over even if that means waiting for the writer."""
    if size == 0:
        return False
    if size >= max_records or age_s >= max_age_s:
        return True
    return not writer_busy and age_s >= BATCH_LINGER_S


def poll_wait(size: int, age_s: float, writer_busy: bool, *, max_age_s: float) -> float:
    """How long the next poll may wait for a message (it returns at the first one)."""
    if size == 0:
        # poll() returns at the first message, and a commit in flight is joined when the next
        # batch is handed over: nothing to look for meanwhile
        return IDLE_WAIT_S
    due = max_age_s if writer_busy else min(max_age_s, BATCH_LINGER_S)
    left = max(0.0, due - age_s)
    return min(left, BUSY_LOOK_S) if writer_busy else left
