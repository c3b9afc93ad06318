"""rtmh.embedded.frames: Produce requests and responses read from their bytes, in the
classic (v7) and flexible (v9+) encodings, the topic ids of Fetch requests, and nothing raised
on anything else."""

from __future__ import annotations

import struct

import pytest

from rtmh.embedded.frames import (
    Appended,
    Written,
    count_batches,
    parse_fetch_request,
    parse_produce_request,
    parse_produce_response,
    request_client_id,
    request_header,
    response_correlation,
    topic_id_bytes,
)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string(s: str | None, flexible: bool) -> bytes:
    if s is None:
        return uvarint(0) if flexible else struct.pack(">h", -1)
    raw = s.encode()
    return (uvarint(len(raw) + 1) if flexible else struct.pack(">h", len(raw))) + raw


def array_len(n: int, flexible: bool) -> bytes:
    return uvarint(n + 1) if flexible else struct.pack(">i", n)


def blob(raw: bytes, flexible: bool) -> bytes:
    return (uvarint(len(raw) + 1) if flexible else struct.pack(">i", len(raw))) + raw


def tags(flexible: bool) -> bytes:
    return uvarint(0) if flexible else b""


def record_batch(records: int, payload: bytes = b"x" * 20) -> bytes:
    """A v2 RecordBatch header with ``records`` and an opaque body (only its length matters)."""
    after_length = (
        struct.pack(">ibi", 0, 2, 0)  # leader epoch, magic, crc
        + struct.pack(">hi", 0, records - 1)  # attributes, last offset delta
        + struct.pack(">qqqhi", 0, 0, -1, -1, -1)  # timestamps, producer id, epoch, sequence
        + struct.pack(">i", records)
        + payload
    )
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_request(
    version: int, writes: dict[str, dict[int, bytes]], acks: int = -1, corr: int = 7
) -> bytes:
    flexible = version >= 9
    out = struct.pack(">hhi", 0, version, corr) + string("client-1", False) + tags(flexible)
    out += string(None, flexible) + struct.pack(">hi", acks, 30_000)
    out += array_len(len(writes), flexible)
    for topic, parts in writes.items():
        out += string(topic, flexible) + array_len(len(parts), flexible)
        for partition, records in parts.items():
            out += struct.pack(">i", partition) + blob(records, flexible) + tags(flexible)
        out += tags(flexible)
    return out + tags(flexible)


def produce_response(version: int, answers: dict[str, dict[int, tuple[int, int]]]) -> bytes:
    flexible = version >= 9
    out = struct.pack(">i", 7) + tags(flexible) + array_len(len(answers), flexible)
    for topic, parts in answers.items():
        out += string(topic, flexible) + array_len(len(parts), flexible)
        for partition, (error, base) in parts.items():
            out += struct.pack(">ihqqq", partition, error, base, -1, 0)
            if version >= 8:
                out += array_len(1, flexible) + struct.pack(">i", 0) + string("bad", flexible)
                out += tags(flexible) + string(None, flexible)
            out += tags(flexible)
        out += tags(flexible)
    return out + struct.pack(">i", 0) + tags(flexible)


@pytest.mark.parametrize("version", [7, 9, 10, 12])
def test_a_request_says_what_it_writes(version: int) -> None:
    two = record_batch(3) + record_batch(4)
    frame = produce_request(version, {"a": {0: two, 2: record_batch(1)}, "b": {1: b""}})
    assert request_header(frame) == (0, version, 7)
    request = parse_produce_request(frame)
    assert request is not None
    assert request.acks == -1 and request.correlation_id == 7
    assert request.writes == (
        Written("a", 0, 7, 2, len(two)),
        Written("a", 2, 1, 1, len(record_batch(1))),
        Written("b", 1, 0, 0, 0),
    )


@pytest.mark.parametrize("version", [7, 10])
def test_a_response_gives_each_partition_its_offset(version: int) -> None:
    frame = produce_response(version, {"a": {0: (0, 41), 2: (6, -1)}, "b": {1: (0, 0)}})
    assert response_correlation(frame) == 7
    assert parse_produce_response(frame, version) == [
        Appended("a", 0, 0, 41),
        Appended("a", 2, 6, -1),
        Appended("b", 1, 0, 0),
    ]


def test_fire_and_forget_is_told_apart() -> None:
    request = parse_produce_request(produce_request(10, {"a": {0: record_batch(1)}}, acks=0))
    assert request is not None and request.acks == 0


def test_what_cannot_be_read_is_none_not_an_error() -> None:
    frame = produce_request(10, {"a": {0: record_batch(2)}})
    for cut in (3, 10, 20, len(frame) - 30):
        assert parse_produce_request(frame[:cut]) is None
    assert parse_produce_request(produce_request(2, {"a": {}})) is None  # message sets: too old
    assert parse_produce_request(b"\x00\x01" + frame[2:]) is None  # a Fetch, not a Produce
    response = produce_response(10, {"a": {0: (0, 1)}})
    assert parse_produce_response(response[:12], 10) is None
    assert parse_produce_response(response, 13) is None  # topics by id: not followed


def test_batches_are_counted_by_their_lengths() -> None:
    assert count_batches(b"") == (0, 0)
    assert count_batches(record_batch(5) + record_batch(1, b"y" * 300)) == (6, 2)


def fetch_request(version: int, topics: dict[bytes, list[int]]) -> bytes:
    """A flexible Fetch (v13+) as librdkafka sends it: topics by id, a tagged field here and
    there, and a forgotten topic that must not count as fetched."""
    out = struct.pack(">hhi", 1, version, 9) + string("consumer-1", False) + tags(True)
    if version <= 14:
        out += struct.pack(">i", -1)  # replica id
    out += struct.pack(">iiibii", 10, 1, 52_428_800, 0, 0, -1)
    out += array_len(len(topics), True)
    for topic_id, partitions in topics.items():
        out += topic_id + array_len(len(partitions), True)
        for partition in partitions:
            out += struct.pack(">iiqiqi", partition, 0, 1234, -1, -1, 1_048_576)
            out += uvarint(1) + uvarint(0) + uvarint(16) + b"d" * 16  # one tagged field
        out += tags(True)
    out += array_len(1, True) + b"\xee" * 16 + array_len(1, True) + struct.pack(">i", 0)
    out += tags(True)
    return out + string("", True) + tags(True)


def fetch_topic_ids(frame: bytes) -> tuple[bytes, ...] | None:
    request = parse_fetch_request(frame)
    return None if request is None else request.topic_ids


@pytest.mark.parametrize("version", [13, 15, 16])
def test_a_fetch_names_its_topic_ids(version: int) -> None:
    a, b = bytes(range(16)), bytes(range(16, 32))
    assert fetch_topic_ids(fetch_request(version, {a: [0, 1], b: [3]})) == (a, b)
    assert fetch_topic_ids(fetch_request(version, {})) == ()


def test_a_fetch_without_ids_or_cut_short_is_none() -> None:
    frame = fetch_request(16, {bytes(16): [0]})
    assert fetch_topic_ids(b"\x00\x01\x00\x0c" + frame[4:]) is None  # v12 names its topics
    assert fetch_topic_ids(produce_request(10, {"a": {0: record_batch(1)}})) is None
    for cut in (5, 20, 40, 60):
        assert fetch_topic_ids(frame[:cut]) is None


def test_a_request_names_its_client() -> None:
    assert request_client_id(fetch_request(16, {})) == "consumer-1"
    assert request_client_id(produce_request(10, {})) == "client-1"
    assert request_client_id(fetch_request(16, {})[:12]) is None


def test_topic_id_text_becomes_the_protocols_bytes() -> None:
    # the text confluent-kafka prints for Uuid(0x0123456789abcdef, 0x1122334455667788)
    assert topic_id_bytes("ASNFZ4mrze8RIjNEVWZ3iA").hex() == "0123456789abcdef1122334455667788"
    with pytest.raises(ValueError, match="not a topic id"):
        topic_id_bytes("AAAA")
