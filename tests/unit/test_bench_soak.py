"""`rtmh bench soak`'s pure parts: the seeded schedules, the marked traffic, the verdicts of the
end checks, the memory figures and plot, and the receiver's outage mode."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from rtmh.bench.receiver import ArrivalReceiver
from rtmh.bench.soak.chaos import Crash
from rtmh.bench.soak.command import SHORT
from rtmh.bench.soak.memory import Sampler, plot, pss_mb, rss_mb
from rtmh.bench.soak.model import (
    FAIL_RECEIVER,
    FAULTS,
    KILL_WORKER,
    RECEIVER_LEAD_S,
    RESTART_POSTGRES,
    Checks,
    FaultDone,
    MemorySample,
    SoakConfig,
    broker_bounded,
    burst_schedule,
    fault_schedule,
    match_alerts,
    memory_figures,
)
from rtmh.bench.soak.run import keep_logs
from rtmh.bench.soak.traffic import BAD_MARKER, SEQ_FIELD, malformed, with_sequence
from rtmh.notify.channels.webhook import IDEMPOTENCY_HEADER


def test_an_hour_has_every_fault_several_times_one_at_a_time() -> None:
    config = SoakConfig()
    bursts = burst_schedule(config)
    faults = fault_schedule(config, FAULTS, bursts)
    assert faults == fault_schedule(config, FAULTS, bursts)  # seeded: a run can be repeated
    for kind in FAULTS:
        assert sum(f.kind == kind for f in faults) >= 3, kind
    assert faults[0].at >= config.quiet_start_s
    for before, after in pairwise(faults):
        assert after.at >= before.at + before.hold_s, (before, after)
    assert faults[-1].at + faults[-1].hold_s < config.duration_s
    assert {f.target for f in faults if f.kind == KILL_WORKER} == {1, 2}
    assert {f.target for f in faults if f.kind == RESTART_POSTGRES} == {0, 1}


def test_the_receiver_fails_just_before_a_burst() -> None:
    config = SoakConfig()
    bursts = burst_schedule(config)
    starts = {b.start for b in bursts}
    failures = [f for f in fault_schedule(config, FAULTS, bursts) if f.kind == FAIL_RECEIVER]
    assert failures
    for f in failures:
        assert f.at + RECEIVER_LEAD_S in starts, f
        low, high = config.receiver_failure_s
        assert low <= f.hold_s <= high


def test_the_short_run_has_every_kind_of_fault() -> None:
    faults = fault_schedule(SHORT, FAULTS, burst_schedule(SHORT))
    assert {f.kind for f in faults} == set(FAULTS)


def test_a_schedule_leaves_out_the_kinds_it_cannot_do() -> None:
    kinds = tuple(k for k in FAULTS if k != RESTART_POSTGRES)
    faults = fault_schedule(SHORT, kinds, burst_schedule(SHORT))
    assert faults and all(f.kind != RESTART_POSTGRES for f in faults)


def test_bursts_take_the_services_in_turn_and_end_within_the_run() -> None:
    config = replace(SoakConfig(), duration_s=1000.0, burst_every_s=100.0, burst_s=30.0)
    bursts = burst_schedule(config)
    assert [b.start for b in bursts] == [100.0 * i for i in range(1, 10)]
    assert [b.service for b in bursts[:7]] == [*config.service_list(), config.service_list()[0]]
    assert all(b.end == b.start + 30.0 <= 1000.0 for b in bursts)


def test_a_good_message_carries_its_number_and_stays_json() -> None:
    value = b'{"ts":1.5,"service":"checkout","msg":"GET / 200"}'
    doc = json.loads(with_sequence(value, 41))
    assert doc[SEQ_FIELD] == 41
    assert doc["service"] == "checkout" and doc["msg"] == "GET / 200"
    with pytest.raises(ValueError):
        with_sequence(b"[1, 2]", 1)
    with pytest.raises(ValueError):
        with_sequence(b"{}", 1)


def test_a_malformed_message_is_not_json_and_carries_its_marker() -> None:
    bad = malformed(7)
    with pytest.raises(ValueError):
        json.loads(bad)
    assert f"{BAD_MARKER}7".encode() in bad


def passing_checks() -> Checks:
    return Checks(
        good_sent=1000,
        good_rows=1000,
        bad_sent=10,
        bad_dead_lettered=10,
        windows_compared=50,
        incidents=2,
        bursts=2,
        bursts_alerted=2,
        notifications=4,
        notification_status={"sent": 4},
        keys_accepted=4,
    )


def test_the_checks_pass_only_when_every_promise_holds() -> None:
    assert passing_checks().passed()
    assert not Checks().passed()  # nothing sent proves nothing
    failures = {
        "a message lost": {"good_rows": 999, "good_missing": 1},
        "a message doubled": {"good_rows": 1001, "good_duplicates": 1},
        "a malformed one not dead-lettered": {"bad_dead_lettered": 9, "bad_missing": 1},
        "a burst not alerted": {"bursts_alerted": 1},
        "a window off": {"window_problems": ["1 difference(s)", "('a', 'log_count', 0): ..."]},
        "a notification dead": {"notification_status": {"sent": 3, "dead": 1}},
        "a key never accepted": {"keys_accepted": 3, "keys_missing": 1},
        "a key nobody sent": {"keys_unknown": 1},
        "a forged signature": {"bad_signatures": 1},
    }
    for what, change in failures.items():
        assert not replace(passing_checks(), **change).passed(), what  # type: ignore[arg-type]


def test_a_redelivered_key_is_counted_not_a_failure() -> None:
    # the notifier killed between the receiver's 200 and its own record sends the same key
    # again: the key is there so the receiver drops it
    assert replace(passing_checks(), redeliveries=1).passed()


def mem(t: float, **mb: float | None) -> MemorySample:
    return MemorySample(t, dict(mb), 10.0)


def test_memory_figures_judge_the_second_half() -> None:
    samples = [mem(t, broker=b, notifier=50.0) for t, b in ((0, 10.0), (600, 30.0), (1200, 30.0))]
    samples.append(mem(1800, broker=30.0, notifier=None))  # the notifier was down then
    samples.append(mem(2400, broker=30.0, notifier=50.0))
    figures = memory_figures(samples, 2400.0)
    assert figures["broker"] == {
        "first_mb": 10.0,
        "max_mb": 30.0,
        "last_mb": 30.0,
        "slope_second_half_mb_per_10_min": 0.0,
    }
    assert figures["notifier"]["max_mb"] == 50.0
    assert figures["broker_cpu_mean"] == 10.0
    assert broker_bounded(figures) is True
    rising = [mem(t, broker=10.0 + t / 30) for t in range(0, 2401, 300)]
    assert broker_bounded(memory_figures(rising, 2400.0)) is False
    assert broker_bounded(memory_figures([], 0.0)) is None


def test_the_sampler_reads_live_processes_and_marks_absent_ones() -> None:
    me = os.getpid()
    sampler = Sampler(lambda: {"worker-1": me, "worker-2": None, "broker": me}, lambda: [me], float)
    first = sampler.sample(0.0)
    assert first.mb["worker-1"] and first.mb["worker-1"] > 0
    assert first.mb["worker-2"] is None
    assert first.mb["postgres"] and first.mb["postgres"] > 0
    assert first.broker_cpu is None  # CPU needs two samples
    assert rss_mb(None) is None and pss_mb([]) is None


def test_the_plot_is_a_png_with_the_faults_marked(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    samples = [mem(t, broker=20.0, postgres=80.0) for t in (0.0, 60.0, 120.0)]
    path = tmp_path / "soak.png"
    assert plot(samples, [FaultDone(30.0, KILL_WORKER, "SIGKILL worker-1", 2.0)], path, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def post(url: str, key: str) -> int:
    request = urllib.request.Request(
        url, data=b"{}", headers={IDEMPOTENCY_HEADER: key}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_a_failing_receiver_answers_503_and_records_nothing() -> None:
    with ArrivalReceiver() as receiver:
        receiver.failing = True
        assert post(receiver.url, "k1") == 503
        assert receiver.refused == 1 and receiver.accepted_keys() == {}
        receiver.failing = False
        assert post(receiver.url, "k1") == 200
        assert post(receiver.url, "k1") == 200
        assert set(receiver.accepted_keys()) == {"k1"}
        assert receiver.duplicates == 1


def test_each_burst_takes_the_first_opening_of_its_service_in_its_span() -> None:
    bursts = [("checkout", 1000.0), ("search", 1240.0), ("checkout", 2440.0)]
    openings = [
        ("checkout", 1000.8),  # the first burst's
        ("checkout", 1010.0),  # a reopening within the same burst: not a false alert
        ("payments", 1300.0),  # no burst of payments: unexplained
        ("search", 1400.0),  # 130 s after its 30-s burst ended: within the grace
    ]
    found = match_alerts(bursts, 30.0, openings, grace_s=180.0)
    assert found.alerted == 2  # the second checkout burst opened nothing
    assert found.delays_s == [0.8, 160.0]
    assert found.unexplained == [("payments", 1300.0)]
    assert match_alerts(bursts, 30.0, [("search", 1239.0)]).alerted == 0  # before its burst


def test_a_crash_names_the_signal_and_the_last_lines() -> None:
    crash = Crash(3063.4, "worker-2", -11, "re-checked a[0]@0 | Disconnected")
    assert crash.describe() == (
        "worker-2 killed by SIGSEGV at 3063 s; its log ended: re-checked a[0]@0 | Disconnected"
    )
    assert Crash(5.0, "notifier", 1, "").describe().startswith("notifier exited with 1 at 5 s")


def test_a_crash_fails_the_run_whatever_else_held() -> None:
    assert not replace(passing_checks(), crashes=["worker-2 killed by SIGSEGV at 3063 s"]).passed()


def test_a_failed_runs_process_logs_outlive_its_directory(tmp_path: Path) -> None:
    (tmp_path / "worker-1.log").write_text("revoked 6 partition(s)\n")
    (tmp_path / "notifier.log").write_text("sent\n")
    (tmp_path / "postgres").mkdir()
    kept = Path(keep_logs(tmp_path))
    try:
        assert kept != tmp_path
        assert sorted(p.name for p in kept.iterdir()) == ["notifier.log", "worker-1.log"]
        assert (kept / "worker-1.log").read_text() == "revoked 6 partition(s)\n"
    finally:
        shutil.rmtree(kept)
