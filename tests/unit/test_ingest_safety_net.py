"""The pure parts of the ingest safety net: key columns, retry splits, error classes."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmh.ingest.copy_text import Row, key_columns
from rtmh.ingest.safety_net import is_data_error, split_refused
from rtmh.ingest.store import _broker_time, _reason_text
from rtmh.records import DecodedRecord, KafkaMessage, Kind


def _rows(n: int) -> list[Row]:
    rec = DecodedRecord(kind=Kind.LOGS, data="{}", event_time=0.0, service="s")
    return [(KafkaMessage("t", 0, i, None, b"{}", None), rec) for i in range(n)]


def test_clean_keys_stay_text_and_keep_no_bytes() -> None:
    assert key_columns(None) == (None, None)
    assert key_columns(b"api") == ("api", None)
    assert key_columns("zürich".encode()) == ("zürich", None)


def test_nul_and_non_utf8_keys_are_escaped_and_kept_byte_for_byte() -> None:
    assert key_columns(b"ap\x00i") == ("ap\\x00i", b"ap\x00i")
    assert key_columns(b"\xff\xfeok") == ("\\xff\\xfeok", b"\xff\xfeok")


@given(st.binary(max_size=64))
def test_any_key_is_storable_and_recoverable(key: bytes) -> None:
    text, raw = key_columns(key)
    assert text is not None and "\x00" not in text
    text.encode("utf-8")  # PostgreSQL text takes it
    assert (raw if raw is not None else text.encode()) == key


def test_split_around_the_named_line_isolates_that_row_alone() -> None:
    rows = _rows(10)
    parts = split_refused(rows, 4)
    assert [[m.offset for m, _ in p] for p in parts] == [[0, 1, 2, 3], [4], [5, 6, 7, 8, 9]]
    assert [len(p) for p in split_refused(rows, 0)] == [1, 9]
    assert [len(p) for p in split_refused(rows, 9)] == [9, 1]


def test_split_without_a_usable_line_halves() -> None:
    rows = _rows(7)
    assert [len(p) for p in split_refused(rows, None)] == [3, 4]
    assert [len(p) for p in split_refused(rows, 99)] == [3, 4]  # a line of another COPY


@given(st.integers(min_value=2, max_value=500), st.none() | st.integers(-5, 600))
def test_splits_cover_every_row_once_and_always_shrink(n: int, line: int | None) -> None:
    rows = _rows(n)
    parts = split_refused(rows, line)
    assert [r for p in parts for r in p] == rows
    assert all(0 < len(p) < n for p in parts)


def test_only_data_errors_are_isolated() -> None:
    assert is_data_error(psycopg.errors.CharacterNotInRepertoire())
    assert is_data_error(psycopg.errors.NumericValueOutOfRange())
    assert is_data_error(psycopg.errors.CheckViolation())
    assert is_data_error(psycopg.errors.NotNullViolation())
    assert is_data_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert is_data_error(OverflowError("date value out of range"))
    assert not is_data_error(psycopg.errors.DeadlockDetected())
    assert not is_data_error(psycopg.errors.DiskFull())
    assert not is_data_error(psycopg.OperationalError("connection lost"))
    assert not is_data_error(KeyError("a bug is not a data error"))


@pytest.mark.parametrize("ms", [2**62, -(2**62), 10**18])
def test_broker_times_beyond_datetime_are_left_empty(ms: int) -> None:
    assert _broker_time(ms) is None


def test_broker_time_in_range() -> None:
    when = _broker_time(1_700_000_000_000)
    assert when is not None and when.year == 2023
    assert _broker_time(None) is None


def test_reasons_are_storable_text() -> None:
    assert _reason_text("bad \x00 and \ud800") == "bad \\x00 and \\ud800"
    _reason_text("\udcff").encode("utf-8")
