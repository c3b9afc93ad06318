"""`rtmh bench compare`'s pure parts: the peer's generated configs, the schedule, the traffic's
quiet service, and webhooks matched to bursts with the figures made of them."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from rtmh import simulate as sim
from rtmh.bench.compare.measure import (
    Span,
    command_line,
    detections,
    false_alerts,
    system_figures,
    verdicts,
)
from rtmh.bench.compare.model import (
    PROFILES,
    QUIET_SERVICE,
    RTMH,
    Arrival,
    CompareConfig,
    schedule,
    timeline,
)
from rtmh.bench.compare.peer import (
    alertmanager_config,
    find_binaries,
    firing_services,
    prometheus_config,
    ratio_expr,
    rules_config,
)
from rtmh.bench.compare.run import Arrivals

TIGHT, DEFAULT = PROFILES["tight"], PROFILES["default"]


def test_prometheus_config_is_yaml_with_the_profiles_intervals() -> None:
    doc = yaml.safe_load(json.dumps(prometheus_config(DEFAULT, "127.0.0.1:9", "127.0.0.1:8")))
    assert doc["global"] == {"scrape_interval": "60s", "evaluation_interval": "60s"}
    assert doc["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9"]
    am = doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["127.0.0.1:8"]
    assert doc["rule_files"] == ["rules.yml"]
    tight = prometheus_config(TIGHT, "e", "a")["global"]
    assert tight == {"scrape_interval": "1s", "evaluation_interval": "1s"}


def test_the_alert_rule_is_the_same_ratio_with_for_zero() -> None:
    rule = rules_config(DEFAULT)["groups"][0]["rules"][0]
    assert rule["for"] == "0s"
    assert rule["expr"] == (
        "sum by (service) (rate(rtmh_bench_errors_total[120s])) / "
        "sum by (service) (rate(rtmh_bench_requests_total[120s])) > 0.05"
    )
    assert "[60s]" in ratio_expr(TIGHT.rate_window_s)


def test_alertmanager_groups_by_service_and_posts_to_the_receiver() -> None:
    doc = alertmanager_config(DEFAULT, "http://127.0.0.1:1/hook")
    route = doc["route"]
    assert route["group_by"] == ["service"]
    assert (route["group_wait"], route["group_interval"]) == ("30s", "300s")
    assert doc["receivers"][0]["webhook_configs"][0]["url"] == "http://127.0.0.1:1/hook"
    tight = alertmanager_config(TIGHT, "u")["route"]
    assert (tight["group_wait"], tight["group_interval"]) == ("0s", "1s")


def test_binaries_are_found_under_debians_names_or_not_at_all() -> None:
    debian = {"prometheus": "/usr/bin/prometheus", "prometheus-alertmanager": "/usr/bin/pam"}
    found = find_binaries(debian.get)
    assert found is not None and found.alertmanager == "/usr/bin/pam"
    upstream = {"prometheus": "/p", "alertmanager": "/a"}
    assert find_binaries(upstream.get) is not None
    assert find_binaries({"prometheus": "/p"}.get) is None
    assert find_binaries({}.get) is None


def test_firing_services_reads_alertmanagers_webhook_body() -> None:
    body = {
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "X", "service": "checkout"}},
            {"status": "resolved", "labels": {"service": "payments"}},
            {"status": "firing", "labels": {}},
        ],
    }
    assert firing_services(json.dumps(body).encode()) == ["checkout"]
    assert firing_services(b"not json") == []
    assert firing_services(b"[]") == []


def test_rtmh_webhooks_count_opens_only() -> None:
    arrivals = Arrivals()
    opened = {"event": "open", "incident": {"service": "checkout"}}
    arrivals.rtmh_body(1.0, json.dumps(opened).encode())
    arrivals.rtmh_body(2.0, json.dumps({**opened, "event": "resolve"}).encode())
    arrivals.rtmh_body(3.0, b"{")
    arrivals.peer_body("prometheus/tight")(4.0, b'{"alerts": []}')
    assert arrivals.snapshot() == [Arrival(RTMH, "checkout", 1.0)]


def test_short_timeline_is_short_and_default_bursts_outlast_the_defaults() -> None:
    short = CompareConfig(bursts=2, profiles=("tight",), full_windows=False)
    line = timeline(short)
    assert line.end_s <= 90, line
    # a real run lets the rate window fill before the first burst: a half-empty window holds
    # fewer requests, so a burst crosses 5 % sooner than it would in steady state
    full = timeline(CompareConfig(bursts=2, profiles=("tight",)))
    assert full.warmup_s >= TIGHT.rate_window_s + 2 * TIGHT.scrape_s
    assert line.quiet_error_at < line.warmup_s
    bursts = schedule(short, line)
    assert [b.service for b in bursts] == short.bursting()
    assert all(b.end - b.start == pytest.approx(line.burst_s) for b in bursts)
    assert bursts[0].start == line.warmup_s
    full = CompareConfig()
    line = timeline(full)
    # two scrapes at rest before the first burst; bursts longer than a scrape, an evaluation,
    # the rate window's first useful sample and group_wait together
    assert line.warmup_s >= DEFAULT.rate_window_s + 2 * DEFAULT.scrape_s
    assert line.burst_s > DEFAULT.scrape_s * 2 + DEFAULT.evaluation_s + DEFAULT.group_wait_s
    starts = [b.start for b in schedule(full, line)]
    assert starts == sorted(starts) and len(set(starts)) == full.bursts


def test_services_are_bursting_calm_and_one_quiet() -> None:
    c = CompareConfig(bursts=3)
    services = c.services()
    assert services[:3] == c.bursting() and services[-1] == QUIET_SERVICE
    assert len(services) == 3 + 2 + 1 and len(c.weights()) == len(services)


def test_weighted_traffic_keeps_the_quiet_service_quiet_and_plants_one_error() -> None:
    c = CompareConfig(bursts=3)
    lines: list[sim.LogLine] = []
    plan = sim.Scenario("t", "", phases=(sim.Phase(0, 1e9, QUIET_SERVICE, error_ratio=0.0),))
    traffic = sim.Traffic(
        plan, tuple(c.services()), seed=1, on_log=lines.append, weights=c.weights()
    )
    for t in range(100):
        traffic.batch(float(t), 100)
    per_service = Counter(line.service for line in lines)
    assert per_service[QUIET_SERVICE] < per_service["checkout"] / 50
    assert not any(line.error for line in lines if line.service == QUIET_SERVICE)
    kind, key, value = traffic.one_log(sim.Phase(5, 5, QUIET_SERVICE, error_ratio=1.0))
    assert (kind, key) == ("logs", QUIET_SERVICE.encode())
    assert json.loads(value)["level"] == "error" and lines[-1].error
    with pytest.raises(ValueError):
        sim.Traffic(plan, ("a", "b"), weights=[1.0])


BURSTS = [Span(0, "checkout", 100.0, 120.0), Span(1, "payments", 104.0, 124.0)]


def test_detection_is_the_first_webhook_for_the_service_after_the_start() -> None:
    arrivals = [
        Arrival(RTMH, "checkout", 99.0),  # before the burst: not its detection
        Arrival(RTMH, "checkout", 101.5),
        Arrival(RTMH, "checkout", 102.0),
        Arrival("prometheus/tight", "checkout", 108.0),
        Arrival(RTMH, "payments", 150.0),  # after the deadline: missed
    ]
    assert detections(BURSTS, arrivals, RTMH, 40) == {0: 1.5, 1: None}
    assert detections(BURSTS, arrivals, "prometheus/tight", 40) == {0: 8.0, 1: None}


def test_false_alerts_are_webhooks_with_no_burst_at_the_time_counted_once_a_grace() -> None:
    arrivals = [
        Arrival(RTMH, "checkout", 99.0),  # before its burst: false
        Arrival(RTMH, "checkout", 130.0),  # within the grace after the burst: not false
        Arrival(RTMH, QUIET_SERVICE, 50.0),
        Arrival(RTMH, QUIET_SERVICE, 55.0),  # the same false alert again
        Arrival(RTMH, QUIET_SERVICE, 200.0),  # a new one
        Arrival("prometheus/tight", "search", 10.0),  # another system's
    ]
    false = false_alerts(BURSTS, arrivals, RTMH, grace_s=20)
    assert [(a.service, a.at) for a in false] == [
        (QUIET_SERVICE, 50.0),
        ("checkout", 99.0),
        (QUIET_SERVICE, 200.0),
    ]


def test_system_figures_and_verdicts_say_where_a_peer_did_better() -> None:
    arrivals = [
        Arrival(RTMH, "checkout", 101.0),
        Arrival(RTMH, "payments", 106.0),
        Arrival(RTMH, "search", 50.0),
        Arrival("prometheus/tight", "checkout", 108.0),
        Arrival("prometheus/tight", "payments", 114.0),
    ]
    rtmh = system_figures(RTMH, BURSTS, arrivals, 40, 20)
    peer = system_figures("prometheus/tight", BURSTS, arrivals, 40, 20)
    assert rtmh["detected"] == 2 and rtmh["missed"] == [] and rtmh["false_alerts"] == 1
    lat = rtmh["latency_s"]
    assert isinstance(lat, dict) and (lat["p50"], lat["max"]) == (1.5, 2.0)
    assert peer["false_alerts"] == 0 and peer["false_alert_services"] == []
    said = verdicts([rtmh, peer], RTMH)
    assert said == [
        "rtmh detected faster than prometheus/tight (p50 1.5 s against 9.0 s, 6.0x)",
        "prometheus/tight raised fewer false alerts than rtmh (0 against 1)",
    ]
    none = system_figures("prometheus/default", BURSTS, [], 40, 20)
    assert none["latency_s"] is None and none["missed"] == [0, 1]
    assert verdicts([rtmh, none], RTMH) == [
        "rtmh detected more bursts than prometheus/default (2 against 0)",
        "prometheus/default raised fewer false alerts than rtmh (0 against 1)",
    ]


def test_the_command_line_repeats_the_run() -> None:
    assert command_line(CompareConfig()) == (
        "rtmh bench compare --bursts 5 --rate 200 --profiles tight,default --base-errors 0.005"
    )
    alone = CompareConfig(bursts=2, profiles=(), base_errors=0.0)
    assert command_line(alone) == "rtmh bench compare --bursts 2 --rate 200 --base-errors 0"
    assert command_line(CompareConfig(full_windows=False)) == "rtmh bench compare --short"
