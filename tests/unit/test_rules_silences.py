"""Silence matching (rtmh.rules.silences): globs, all-keys semantics, the active window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmh.rules.silences import Silence, matching_silence, validate_matchers

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def silence(id_: int, matchers: dict[str, Any], *, start: int = -1, end: int = 1) -> Silence:
    return Silence(id_, NOW + start * HOUR, NOW + end * HOUR, matchers)


def match(silences: list[Silence], rule: str | None = "high_error_rate",
          service: str | None = "checkout", severity: str | None = "high",
          now: datetime = NOW) -> int | None:  # fmt: skip
    return matching_silence(silences, rule, service, severity, now)


@pytest.mark.parametrize(
    ("matchers", "silenced"),
    [
        ({"rule": "high_error_rate"}, True),
        ({"rule": "high_*"}, True),
        ({"service": "check???"}, True),
        ({"service": "[a-c]*"}, True),
        ({"severity": "high", "service": "checkout"}, True),
        ({"severity": "critical", "service": "checkout"}, False),  # every key must match
        ({"rule": "High_error_rate"}, False),  # case-sensitive
        ({"service": "check"}, False),  # globs match the whole value
        ({"service": "*", "host": "web-1"}, False),  # unknown key: never silences
        ({"rule": 5}, False),  # not a string: never silences
        ({}, False),  # the schema forbids it; it must not silence everything either
    ],
)
def test_matchers(matchers: dict[str, Any], silenced: bool) -> None:
    assert (match([silence(7, matchers)]) == 7) is silenced


def test_active_window_includes_start_and_excludes_end() -> None:
    window = [silence(1, {"service": "*"}, start=0, end=1)]
    assert match(window, now=NOW) == 1
    assert match(window, now=NOW + HOUR) is None
    assert match(window, now=NOW - timedelta(microseconds=1)) is None


def test_missing_fields_match_only_a_star() -> None:
    assert match([silence(1, {"rule": "*"})], rule=None) == 1
    assert match([silence(1, {"rule": "high*"})], rule=None) is None


def test_several_matches_pick_the_one_ending_last_then_lowest_id() -> None:
    silences = [
        silence(3, {"service": "*"}, end=2),
        silence(1, {"service": "checkout"}, end=5),
        silence(2, {"rule": "high_*"}, end=5),
        silence(4, {"service": "*"}, start=-3, end=-1),  # expired
    ]
    assert match(silences) == 1


@given(st.permutations([0, 1, 2, 3]))
def test_answer_does_not_depend_on_row_order(order: list[int]) -> None:
    silences = [
        silence(10, {"service": "*"}, end=3),
        silence(11, {"severity": "high"}, end=3),
        silence(12, {"rule": "nope"}, end=9),
        silence(13, {"service": "checkout"}, end=2),
    ]
    assert match([silences[i] for i in order]) == 10


def test_from_row() -> None:
    row = {"id": 9, "matchers": {"service": "api"}, "starts_at": NOW, "ends_at": NOW + HOUR,
           "comment": "deploy", "created_by": "ana"}  # fmt: skip
    assert Silence.from_row(row) == Silence(9, NOW, NOW + HOUR, {"service": "api"})


def test_validate_matchers() -> None:
    assert validate_matchers({"rule": "r*", "severity": "low"}) == {"rule": "r*", "severity": "low"}
    bad_matchers: list[object] = [{}, [], {"host": "x"}, {"rule": ""}, {"rule": 3}]
    for bad in bad_matchers:
        with pytest.raises(ValueError):
            validate_matchers(bad)
