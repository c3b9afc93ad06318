"""Group commit: when the poll loop hands its batch to the writer, and how long it polls."""

from __future__ import annotations

import pytest

from rtmh.ingest.batch import (
    BATCH_LINGER_S,
    BUSY_LOOK_S,
    IDLE_WAIT_S,
    hand_over_due,
    poll_wait,
)

CAPS = {"max_records": 20_000, "max_age_s": 0.2}


def test_an_empty_batch_is_never_handed_over() -> None:
    assert not hand_over_due(0, 10.0, False, **CAPS)
    assert not hand_over_due(0, 10.0, True, **CAPS)


def test_a_free_writer_takes_the_batch_after_the_linger() -> None:
    assert not hand_over_due(3, BATCH_LINGER_S / 2, False, **CAPS)
    assert hand_over_due(3, BATCH_LINGER_S, False, **CAPS)


def test_a_busy_writer_lets_the_batch_grow_until_a_cap() -> None:
    assert not hand_over_due(5_000, 0.1, True, **CAPS)
    assert hand_over_due(5_000, 0.2, True, **CAPS)  # the age cap
    assert hand_over_due(20_000, 0.0, True, **CAPS)  # the size cap


def test_the_size_cap_holds_even_before_the_linger() -> None:
    assert hand_over_due(20_000, 0.0, False, **CAPS)


def test_the_caps_win_over_the_linger_when_set_below_it() -> None:
    assert hand_over_due(1, 0.001, False, max_records=1, max_age_s=0.2)
    assert hand_over_due(2, 0.001, False, max_records=100, max_age_s=0.001)


@pytest.mark.parametrize("busy", [False, True])
def test_nothing_held_waits_for_the_first_message(busy: bool) -> None:
    assert poll_wait(0, 0.0, busy, max_age_s=0.2) == IDLE_WAIT_S


def test_a_held_batch_with_a_free_writer_waits_out_the_linger_only() -> None:
    assert poll_wait(3, 0.0, False, max_age_s=0.2) == pytest.approx(BATCH_LINGER_S)
    assert poll_wait(3, BATCH_LINGER_S / 2, False, max_age_s=0.2) == pytest.approx(
        BATCH_LINGER_S / 2
    )
    assert poll_wait(3, 1.0, False, max_age_s=0.2) == 0.0


def test_a_held_batch_with_a_busy_writer_looks_again_soon() -> None:
    assert poll_wait(3, 0.0, True, max_age_s=0.2) == BUSY_LOOK_S
    # close to the cap, it waits no longer than the cap leaves
    assert poll_wait(3, 0.1995, True, max_age_s=0.2) == pytest.approx(0.0005)
    assert poll_wait(3, 0.5, True, max_age_s=0.2) == 0.0


def test_every_wait_ends_by_the_time_the_batch_is_due() -> None:
    """Whatever the state, the poll wakes no later than the moment hand_over_due turns true."""
    for size in (1, 100, 19_999):
        for busy in (False, True):
            for age in (0.0, 0.001, 0.05, 0.199):
                wait = poll_wait(size, age, busy, max_age_s=0.2)
                if not busy:
                    assert hand_over_due(size, age + wait, busy, **CAPS)
                else:
                    assert wait <= BUSY_LOOK_S
