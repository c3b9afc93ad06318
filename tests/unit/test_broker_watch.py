"""rtmh.up.broker_watch: the embedded broker's load from samples, and when `up` warns."""

from __future__ import annotations

from collections import deque

from rtmh.up.broker_watch import (
    CPU_SPAN_S,
    WARN_RSS_BYTES,
    BrokerLoad,
    BrokerSample,
    load_of,
    warnings_for,
)


def test_cpu_is_the_share_of_a_core_between_the_oldest_and_newest_sample() -> None:
    assert load_of(deque()) is None
    one = load_of(deque([BrokerSample(0.0, 100, 1.0)]))
    assert one == BrokerLoad(100, None)
    two = load_of(deque([BrokerSample(0.0, 100, 1.0), BrokerSample(10.0, 200, 3.5)]))
    assert two == BrokerLoad(200, 25.0)


def test_warnings_name_the_bound_and_what_to_do() -> None:
    assert warnings_for(BrokerLoad(10 * 2**20, 10.0), CPU_SPAN_S) == []
    lines = dict(warnings_for(BrokerLoad(WARN_RSS_BYTES, 80.0), CPU_SPAN_S))
    assert set(lines) == {"rss", "cpu"}
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines["rss"]
    assert "80 % of a core" in lines["cpu"]
    # CPU only over a whole span: a start-up burst is no warning
    assert warnings_for(BrokerLoad(0, 95.0), CPU_SPAN_S / 2) == []
