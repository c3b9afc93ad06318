"""Properties of the notification retry schedule (rtmh.notify.backoff)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmh.notify.backoff import backoff_ceiling, next_delay

attempts = st.integers(min_value=1, max_value=10_000)
bases = st.floats(min_value=0.001, max_value=60)
factors = st.floats(min_value=1, max_value=10)
caps = st.floats(min_value=0.001, max_value=86_400)
seeds = st.integers(min_value=0, max_value=2**32)


@given(attempt=attempts, base=bases, factor=factors, cap=caps, seed=seeds)
def test_full_jitter_stays_within_zero_and_the_ceiling(
    attempt: int, base: float, factor: float, cap: float, seed: int
) -> None:
    ceiling = backoff_ceiling(attempt, base=base, factor=factor, cap=cap)
    delay = next_delay(
        attempt, base=base, factor=factor, cap=cap, jitter="full", rng=random.Random(seed)
    )
    assert 0 <= delay <= ceiling <= cap


@given(attempt=attempts, base=bases, factor=factors, cap=caps, seed=seeds)
def test_equal_jitter_keeps_at_least_half_the_ceiling(
    attempt: int, base: float, factor: float, cap: float, seed: int
) -> None:
    ceiling = backoff_ceiling(attempt, base=base, factor=factor, cap=cap)
    delay = next_delay(attempt, base=base, factor=factor, cap=cap, rng=random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling <= cap


@given(attempt=st.integers(min_value=1, max_value=9_999), base=bases, factor=factors, cap=caps)
def test_ceiling_never_shrinks_and_reaches_the_cap(
    attempt: int, base: float, factor: float, cap: float
) -> None:
    here = backoff_ceiling(attempt, base=base, factor=factor, cap=cap)
    assert here <= backoff_ceiling(attempt + 1, base=base, factor=factor, cap=cap)
    assert here == min(cap, here)


def test_ceiling_is_exponential_then_capped() -> None:
    ceilings = [backoff_ceiling(n, base=1, factor=2, cap=300) for n in range(1, 12)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_ceiling(10**9, base=1, factor=10, cap=300) == 300
    assert next_delay(10**9, jitter="none") == 300


def test_no_jitter_and_constant_factor() -> None:
    assert next_delay(3, base=2, factor=3, jitter="none") == 18
    assert next_delay(50, base=5, factor=1, jitter="none") == 5


def test_same_seed_same_schedule() -> None:
    first = [next_delay(n, rng=random.Random(7)) for n in range(1, 8)]
    assert first == [next_delay(n, rng=random.Random(7)) for n in range(1, 8)]


@given(retry_after=st.floats(min_value=0, max_value=10**9), seed=seeds)
def test_retry_after_is_a_floor_capped_at_cap(retry_after: float, seed: int) -> None:
    delay = next_delay(1, cap=300, rng=random.Random(seed), retry_after=retry_after)
    assert min(retry_after, 300) <= delay <= max(1, min(retry_after, 300))


def test_retry_after_ignores_nonsense() -> None:
    assert next_delay(1, jitter="none", retry_after=float("nan")) == 1
    assert next_delay(1, jitter="none", retry_after=-5) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"attempt": True},
        {"attempt": 1, "base": 0},
        {"attempt": 1, "factor": 0.5},
        {"attempt": 1, "cap": float("inf")},
        {"attempt": 1, "jitter": "decorrelated"},
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        next_delay(**kwargs)  # type: ignore[arg-type]
