"""The hot-path decoder (rtmh.ingest.decode): accepted shapes, timestamps, levels, rejections."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtmh.ingest.decode import decode, kind_for_topic
from rtmh.records import Decoded, DecodedRecord, KafkaMessage, Kind, MetricSample, Rejected

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
BROKER_MS = 1_714_564_790_000  # ten seconds earlier
LEVELS = {"trace", "debug", "info", "warn", "error", "fatal"}


def as_bytes(value: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def run(
    value: bytes | str | dict[str, Any] | None,
    kind: Kind = Kind.LOGS,
    *,
    timestamp_ms: int | None = BROKER_MS,
    **options: Any,
) -> Decoded:
    raw = None if value is None else as_bytes(value)
    msg = KafkaMessage(f"rtmh.{kind.value}", 0, 42, None, raw, timestamp_ms)
    options.setdefault("now", NOW)
    return decode(msg, kind, **options)


def accepted(
    value: bytes | str | dict[str, Any], kind: Kind = Kind.LOGS, **kw: Any
) -> DecodedRecord:
    result = run(value, kind, **kw)
    assert isinstance(result, DecodedRecord), result
    return result


def rejected(value: bytes | str | dict[str, Any] | None, kind: Kind = Kind.LOGS, **kw: Any) -> str:
    result = run(value, kind, **kw)
    assert isinstance(result, Rejected), result
    return result.reason


def log(**fields: Any) -> dict[str, Any]:
    return {"ts": "2024-05-01T11:59:59.5Z", "service": "api", "msg": "hello", **fields}


# --- accepted shapes --------------------------------------------------------------------------


def test_our_log_shape_keeps_the_text_exactly_as_received() -> None:
    text = (
        '{ "ts":"2024-05-01T11:59:59.250Z" , "service":"  checkout  ","host":" web-3 ",'
        '"level":"ERROR","msg":"caf\u00e9 \\u00e9 timed out","extra":{"a":[1,2.50,null]} }'
    )
    rec = accepted(text.encode())
    assert rec.data == text
    assert rec.kind is Kind.LOGS
    assert rec.event_time == pytest.approx(NOW - 0.75)
    assert (rec.service, rec.host, rec.level, rec.is_error) == ("checkout", "web-3", "error", True)
    assert rec.flags == ()
    assert rec.windowed


def test_fluent_bit_kafka_output() -> None:
    rec = accepted(
        {
            "@timestamp": 1714564799.123456,
            "log": "GET /health 200",
            "stream": "stdout",
            "service": "api",
            "host": "node-1",
        }
    )
    assert rec.event_time == pytest.approx(1714564799.123456)
    assert (rec.service, rec.host, rec.level, rec.is_error) == ("api", "node-1", None, False)


def test_vector_shape_with_nanosecond_rfc3339() -> None:
    rec = accepted(
        {
            "timestamp": "2024-05-01T11:59:58.123456789Z",
            "message": "disk almost full",
            "host": "db-1",
            "service": "postgres",
            "level": "warning",
            "source_type": "file",
            "file": "/var/log/pg.log",
        }
    )
    assert rec.event_time == pytest.approx(NOW - 1.876543, abs=1e-6)
    assert (rec.service, rec.host, rec.level, rec.is_error) == ("postgres", "db-1", "warn", False)


def test_ecs_nested_objects() -> None:
    rec = accepted(
        {
            "@timestamp": "2024-05-01T11:59:59.000Z",
            "log": {"level": "ERROR", "logger": "app.db"},
            "message": "db down",
            "service": {"name": "shop", "version": "1.2"},
            "host": {"name": "web-1", "hostname": "web-1.local"},
            "ecs": {"version": "8.11.0"},
        }
    )
    assert (rec.service, rec.host, rec.level, rec.is_error) == ("shop", "web-1", "error", True)


def test_ecs_logging_flat_dotted_keys() -> None:
    rec = accepted(
        {
            "@timestamp": "2024-05-01T11:59:59Z",
            "log.level": "warn",
            "message": "slow",
            "service.name": "shop",
            "host.name": "web-1",
            "ecs.version": "1.6.0",
        }
    )
    assert (rec.service, rec.host, rec.level) == ("shop", "web-1", "warn")


def test_pino_numeric_level_epoch_ms_app_and_hostname() -> None:
    rec = accepted(
        {"level": 50, "time": 1714564799123, "pid": 7, "hostname": "h1", "app": "api", "msg": "x"}
    )
    assert rec.event_time == pytest.approx(1714564799.123)
    assert (rec.service, rec.host, rec.level, rec.is_error) == ("api", "h1", "error", True)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("severity", "CRITICAL", "fatal"),  # Google Cloud Logging
        ("severity_text", "WARN", "warn"),  # OpenTelemetry
        ("lvl", "dbg", "debug"),  # logfmt-style
        ("log.level", "information", "info"),
    ],
)
def test_level_aliases_keys(key: str, value: str, expected: str) -> None:
    fields = log()
    fields[key] = value
    assert accepted(fields).level == expected


def test_level_key_priority_prefers_level() -> None:
    rec = accepted(log(level="info", severity="error", **{"log.level": "fatal"}))
    assert rec.level == "info"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("trace", "trace"),
        ("TRACE", "trace"),
        ("Verbose", "trace"),
        ("debug", "debug"),
        ("DBG", "debug"),
        ("info", "info"),
        ("INFO", "info"),
        ("Information", "info"),
        ("notice", "info"),
        ("warn", "warn"),
        ("WARNING", "warn"),
        ("Warning", "warn"),
        ("error", "error"),
        ("ERROR", "error"),
        ("err", "error"),
        ("  Error  ", "error"),
        ("eRrOr", "error"),
        ("fatal", "fatal"),
        ("critical", "fatal"),
        ("CRIT", "fatal"),
        ("alert", "fatal"),
        ("emerg", "fatal"),
        ("panic", "fatal"),
        # syslog severities
        (0, "fatal"),
        (1, "fatal"),
        (2, "fatal"),
        (3, "error"),
        (4, "warn"),
        (5, "info"),
        (6, "info"),
        (7, "debug"),
        ("3", "error"),
        # bunyan / pino
        (10, "trace"),
        (20, "debug"),
        (30, "info"),
        (35, "info"),
        (40, "warn"),
        (50, "error"),
        (60, "fatal"),
        ("60", "fatal"),
        (30.0, "info"),
    ],
)
def test_level_normalisation(raw: object, expected: str) -> None:
    rec = accepted(log(level=raw))
    assert rec.level == expected
    assert rec.is_error is (expected in ("error", "fatal"))
    assert rec.flags == ()


@pytest.mark.parametrize("raw", ["loud", "", 8, 99, -1, "100"])
def test_unknown_level_is_kept_without_level_and_flagged(raw: object) -> None:
    rec = accepted(log(level=raw))
    assert (rec.level, rec.is_error) == (None, False)
    assert rec.flags == ("level_unrecognised",)
    assert rec.windowed


def test_missing_level() -> None:
    rec = accepted(log())
    assert (rec.level, rec.is_error, rec.flags) == (None, False, ())


def test_host_is_optional_and_blank_host_is_none() -> None:
    assert accepted(log()).host is None
    assert accepted(log(host="   ")).host is None


def test_nested_service_wins_over_flat_alternatives() -> None:
    rec = accepted(log(service={"name": " shop "}, app="other"))
    assert rec.service == "shop"


def test_plain_metric() -> None:
    rec = accepted(
        {
            "ts": 1714564799,
            "service": "api",
            "host": "h1",
            "name": "http_latency_ms",
            "value": 12,
            "labels": {"route": "/pay", "deep": {"x": [1, 2]}},
        },
        Kind.METRICS,
    )
    assert rec.kind is Kind.METRICS
    assert rec.samples == (MetricSample("http_latency_ms", 12.0),)
    assert isinstance(rec.samples[0].value, float)
    assert (rec.service, rec.host, rec.event_time, rec.level) == ("api", "h1", 1714564799.0, None)


def test_telegraf_one_sample_per_numeric_field() -> None:
    rec = accepted(
        {
            "name": "cpu",
            "fields": {
                "usage_idle": 97.1,
                "usage_user": 1,
                "healthy": True,
                "down": False,
                "state": "ok",
                "nothing": None,
            },
            "tags": {"host": "h1", "service": "api", "cpu": "cpu-total"},
            "timestamp": 1714564799,
        },
        Kind.METRICS,
    )
    assert rec.samples == (
        MetricSample("cpu_usage_idle", 97.1),
        MetricSample("cpu_usage_user", 1.0),
        MetricSample("cpu_healthy", 1.0),
        MetricSample("cpu_down", 0.0),
    )
    assert (rec.service, rec.host, rec.event_time) == ("api", "h1", 1714564799.0)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1714564799, 1714564799.0),
        (1714564799123, 1714564799.123),
        (1714564799123456789, 1714564799.123456789),
    ],
)
def test_telegraf_timestamp_precision_by_magnitude(timestamp: int, expected: float) -> None:
    rec = accepted(
        {"name": "mem", "fields": {"used": 1}, "tags": {"app": "api"}, "timestamp": timestamp},
        Kind.METRICS,
    )
    assert rec.event_time == pytest.approx(expected)
    assert rec.service == "api"  # tags.app is the fallback for tags.service
    assert rec.host is None


def test_event() -> None:
    rec = accepted(
        {
            "ts": "2024-05-01T11:59:00Z",
            "service": "api",
            "type": " deploy ",
            "severity": "info",
            "payload": {"version": "1.2.3", "by": "ci"},
        },
        Kind.EVENTS,
    )
    assert (rec.kind, rec.event_type, rec.service, rec.event_time) == (
        Kind.EVENTS,
        "deploy",
        "api",
        NOW - 60,
    )
    assert rec.samples == ()


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T11:59:59Z", NOW - 1),
        ("2024-05-01T11:59:59.5Z", NOW - 0.5),
        ("2024-05-01T11:59:59.123456Z", NOW - 0.876544),
        ("2024-05-01T11:59:59.123456789Z", NOW - 0.876543),
        ("2024-05-01T13:59:59+02:00", NOW - 1),
        ("2024-05-01T07:59:59.25-04:00", NOW - 0.75),
        ("2024-05-01 11:59:59Z", NOW - 1),
        ("2024-05-01t11:59:59z", NOW - 1),
        ("2024-05-01T11:59:59", NOW - 1),  # no offset: read as UTC
        (1714564799, NOW - 1),
        (1714564799.5, NOW - 0.5),
        (1714564799500, NOW - 0.5),
        (1714564799500000, NOW - 0.5),
        (1714564799500000000, NOW - 0.5),
        ("1714564799", NOW - 1),
        ("1714564799.5", NOW - 0.5),
        ("1714564799500", NOW - 0.5),
        ("1714564799500000", NOW - 0.5),
        ("1714564799500000000", NOW - 0.5),
    ],
)
def test_timestamp_formats(ts: object, expected: float) -> None:
    for key in ("ts", "@timestamp", "timestamp", "time"):
        rec = accepted({key: ts, "service": "api"})
        assert rec.event_time == pytest.approx(expected, abs=1e-6), key
        assert rec.flags == ()


def test_timestamp_key_priority() -> None:
    rec = accepted({"time": "2024-05-01T11:00:00Z", "ts": 1714564799, "service": "api"})
    assert rec.event_time == NOW - 1


def test_junk_in_a_lower_priority_timestamp_key_is_ignored() -> None:
    rec = accepted({"ts": "2024-05-01T11:59:59Z", "time": "12ms", "service": "api"})
    assert rec.event_time == NOW - 1


def test_missing_timestamp_uses_broker_time_then_now() -> None:
    assert accepted({"service": "api"}).event_time == BROKER_MS / 1000
    assert accepted({"service": "api"}, timestamp_ms=None).event_time == NOW
    assert accepted({"service": "api"}, timestamp_ms=-1).event_time == NOW


@pytest.mark.parametrize("broker_ms", [2**62, 1_000, int((NOW + 7200) * 1000)])
def test_an_unbelievable_broker_time_is_not_an_event_time(broker_ms: int) -> None:
    """A producer sets any broker timestamp; the year 146,140,482 must not reach the windows."""
    rec = accepted({"service": "api"}, timestamp_ms=broker_ms)
    assert rec.event_time == NOW
    assert rec.flags == ("ts_out_of_range",)
    rec = accepted(log(ts="2020-01-01T00:00:00Z"), timestamp_ms=broker_ms)
    assert (rec.event_time, rec.flags) == (NOW, ("ts_out_of_range",))


def test_now_defaults_to_the_clock() -> None:
    result = decode(KafkaMessage("rtmh.logs", 0, 0, None, b'{"service":"a"}', None), Kind.LOGS)
    assert isinstance(result, DecodedRecord)
    assert result.event_time > NOW


@pytest.mark.parametrize(
    "ts",
    [
        "2020-01-01T00:00:00Z",  # more than a year old
        "2024-05-01T13:00:01Z",  # more than an hour ahead
        0,
        "9999-12-31T23:59:59Z",
        1e300,
    ],
)
def test_out_of_range_timestamp_is_kept_but_not_windowed(ts: object) -> None:
    text = json.dumps(log(ts=ts))
    rec = accepted(text)
    assert rec.event_time == BROKER_MS / 1000
    assert rec.flags == ("ts_out_of_range",)
    assert not rec.windowed
    assert rec.data == text
    assert accepted(log(ts=ts), timestamp_ms=None).event_time == NOW


def test_range_limits_are_configurable() -> None:
    assert accepted(log(ts=NOW - 120), max_past_s=60).flags == ("ts_out_of_range",)
    assert accepted(log(ts=NOW + 120), max_future_s=60).flags == ("ts_out_of_range",)
    assert accepted(log(ts=NOW - 59), max_past_s=60).flags == ()


def test_unrecognised_level_and_out_of_range_flags_combine() -> None:
    rec = accepted(log(ts=0, level="loud"))
    assert rec.flags == ("ts_out_of_range", "level_unrecognised")


def test_kind_for_topic() -> None:
    assert kind_for_topic("rtmh.logs", "rtmh.") is Kind.LOGS
    assert kind_for_topic("rtmh.metrics", "rtmh.") is Kind.METRICS
    assert kind_for_topic("t1.events", "t1.") is Kind.EVENTS
    assert kind_for_topic("other.logs", "rtmh.") is None
    assert kind_for_topic("rtmh.traces", "rtmh.") is None
    assert kind_for_topic("rtmh.", "rtmh.") is None


def test_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    text = r'{"service":"api","msg":"C:\\u0000dir"}'
    assert accepted(text).data == text


# --- rejections -------------------------------------------------------------------------------

LONG = "x" * 201
L, M, E = Kind.LOGS, Kind.METRICS, Kind.EVENTS


def telegraf(**fields: Any) -> dict[str, Any]:
    return {"name": "cpu", **fields}


SVC = {"service": "a"}

BAD_MESSAGES: list[tuple[str, bytes | str | dict[str, Any] | None, Kind, str]] = [
    ("tombstone", None, L, "tombstone"),
    ("empty", b"", L, "empty message"),
    ("not utf-8", b'{"service":"a\xff"}', L, "not valid UTF-8 at byte 13"),
    ("raw NUL", b'{"service":"a\x00"}', L, "NUL byte at character 13"),
    ("NUL escape", r'{"service":"a","msg":"x\u0000"}', L, "\\u0000 escape"),
    ("NUL escape after \\\\", r'{"service":"a","msg":"\\\u0000"}', L, "\\u0000 escape"),
    ("not JSON", b"hello world", L, "not valid JSON: JSON is malformed"),
    ("truncated JSON", b'{"service":"a"', L, "not valid JSON"),
    ("trailing data", b'{"service":"a"} {}', L, "trailing characters"),
    ("lone surrogate", r'{"service":"a","msg":"\udc00"}', L, "not valid JSON"),
    ("array", b"[1, 2]", L, "JSON is array, not an object"),
    ("string", b'"hello"', L, "JSON is string, not an object"),
    ("number", b"42", M, "JSON is number, not an object"),
    ("null", b"null", E, "JSON is null, not an object"),
    ("no service", {"ts": 1714564799, "msg": "x"}, L, "missing required field 'service'"),
    ("null service", {"service": None}, L, "missing required field 'service'"),
    ("service int", {"service": 7}, L, "field 'service': expected string, got integer"),
    ("service list", {"service": ["a"]}, L, "field 'service': expected string, got array"),
    ("service blank", {"service": "  "}, L, "field 'service' is empty"),
    ("service long", {"service": LONG}, L, "201 characters, over the 200 limit"),
    ("ECS service nameless", {"service": {"id": 1}}, L, "field 'service.name'"),
    ("app bool", {"app": True}, L, "field 'app': expected string, got boolean"),
    ("host int", {"service": "a", "host": 1}, L, "field 'host': expected string"),
    ("host.name obj", {"service": "a", "host.name": {}}, L, "field 'host.name'"),
    ("level object", {"service": "a", "level": {}}, L, "field 'level': expected string"),
    ("level bool", {"service": "a", "level": True}, L, "got boolean"),
    ("level 2.5", {"service": "a", "level": 2.5}, L, "field 'level'"),
    (
        "ts junk",
        {"service": "a", "ts": "yesterday"},
        L,
        "field 'ts': unparseable timestamp 'yesterday'",
    ),
    ("ts date only", {"service": "a", "ts": "2024-05-01"}, L, "unparseable timestamp"),
    ("ts leap second", {"service": "a", "ts": "2024-05-01T23:59:60Z"}, L, "unparseable"),
    ("ts nan string", {"service": "a", "@timestamp": "NaN"}, L, "field '@timestamp': unparseable"),
    ("ts inf string", {"service": "a", "time": "-inf"}, L, "field 'time': unparseable"),
    ("ts long junk", {"service": "a", "ts": "z" * 500}, L, "'" + "z" * 64 + "...'"),
    (
        "ts bool",
        {"service": "a", "ts": True},
        L,
        "field 'ts': expected RFC 3339 string or epoch number, got boolean",
    ),
    ("ts object", {"service": "a", "timestamp": {}}, L, "field 'timestamp': expected"),
    (
        "ts huge int",
        '{"service":"a","ts":1' + "0" * 400 + "}",
        L,
        "field 'ts': number out of float range",
    ),
    ("ts 1e400", '{"service":"a","ts":1e400}', L, "number out of float range - at `$.ts`"),
    ("bare NaN", b'{"service":"a","name":"m","value":NaN}', M, "bare NaN/Infinity"),
    ("bare -Infinity", b'{"service":"a","name":"m","value":-Infinity}', M, "bare NaN/Infinity"),
    (
        "value 1e400",
        b'{"service":"a","name":"m","value":1e400}',
        M,
        "out of float range - at `$.value`",
    ),
    (
        "value huge int",
        '{"service":"a","name":"m","value":-' + "9" * 400 + "}",
        M,
        "field 'value': number out of float range",
    ),
    (
        "value bool",
        {"service": "a", "name": "m", "value": True},
        M,
        "field 'value': expected number, got boolean",
    ),
    (
        "value 5000 digits",
        '{"service":"a","name":"m","value":' + "7" * 5000 + "}",
        M,
        "number out of float range - at `$.value`",
    ),
    (
        "value string",
        {"service": "a", "name": "m", "value": "12"},
        M,
        "field 'value': expected number, got string",
    ),
    ("no value", {"service": "a", "name": "m"}, M, "missing required field 'value'"),
    ("no metric name", {"service": "a", "value": 1}, M, "missing required field 'name'"),
    (
        "metric name long",
        {"service": "a", "name": LONG, "value": 1},
        M,
        "field 'name' is 201 characters",
    ),
    ("metric no service", {"name": "m", "value": 1}, M, "missing required field 'service'"),
    ("telegraf strings only", telegraf(fields={"s": "x"}, tags=SVC), M, "no numeric field"),
    ("telegraf empty fields", telegraf(fields={}, tags=SVC), M, "no numeric field"),
    (
        "telegraf fields list",
        telegraf(fields=[1], tags=SVC),
        M,
        "'fields': expected object, got array",
    ),
    (
        "telegraf tags string",
        telegraf(fields={"a": 1}, tags="x"),
        M,
        "'tags': expected object, got string",
    ),
    (
        "telegraf no service",
        telegraf(fields={"a": 1}, tags={"host": "h"}),
        M,
        "missing required field 'service'",
    ),
    (
        "telegraf service int",
        telegraf(fields={"a": 1}, tags={"service": 1}),
        M,
        "'tags.service': expected string",
    ),
    (
        "telegraf no name",
        {"fields": {"a": 1}, "tags": {"service": "a"}},
        M,
        "missing required field 'name'",
    ),
    ("event no type", {"service": "a"}, E, "missing required field 'type'"),
    ("event blank type", {"service": "a", "type": ""}, E, "field 'type' is empty"),
    (
        "event type number",
        {"service": "a", "type": 3},
        E,
        "field 'type': expected string, got integer",
    ),
    ("event no service", {"type": "deploy"}, E, "missing required field 'service'"),
    ("too deep", '{"service":"a","x":' + "[" * 5000 + "]" * 5000 + "}", L, "nested too deeply"),
]


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [pytest.param(value, kind, reason, id=name) for name, value, kind, reason in BAD_MESSAGES],
)
def test_bad_message_is_rejected_with_a_reason(
    value: bytes | str | dict[str, Any] | None, kind: Kind, reason: str
) -> None:
    assert reason in rejected(value, kind)


def test_oversized_message_names_its_size_and_the_limit() -> None:
    reason = rejected(log(msg="x" * 200), max_bytes=100)
    assert "over the 100-byte limit" in reason
    assert reason.startswith("message is 2")


def test_message_at_the_size_limit_is_accepted() -> None:
    raw = as_bytes(log())
    accepted(raw, max_bytes=len(raw))


# --- properties -------------------------------------------------------------------------------

KEYS = [
    "ts", "@timestamp", "timestamp", "time", "service", "service.name", "app", "host",
    "host.name", "hostname", "level", "log.level", "log", "severity", "severity_text", "lvl",
    "name", "value", "fields", "tags", "labels", "type", "payload",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities become bare tokens in json.dumps
    | st.text(max_size=30)
    | st.sampled_from(["2024-05-01T11:59:59Z", "1714564799", "error", "WARN", "api", "", " "])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=10), json_values, max_size=8
)


def check_invariants(result: Decoded, raw: bytes) -> None:
    if isinstance(result, Rejected):
        assert result.reason
        return
    assert result.data == raw.decode("utf-8")
    assert result.service == result.service.strip()
    assert 0 < len(result.service) <= 200
    assert result.host is None or (result.host and result.host == result.host.strip())
    assert result.level is None or result.level in LEVELS
    assert result.is_error is (result.level in ("error", "fatal"))
    assert math.isfinite(result.event_time)
    assert all(math.isfinite(sample.value) for sample in result.samples)
    assert set(result.flags) <= {"ts_out_of_range", "level_unrecognised"}


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=300), kind=st.sampled_from(list(Kind)))
def test_never_raises_on_arbitrary_bytes(raw: bytes, kind: Kind) -> None:
    check_invariants(run(raw, kind), raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=json_objects, kind=st.sampled_from(list(Kind)), ascii_only=st.booleans())
def test_never_raises_on_arbitrary_json_objects(
    obj: dict[str, Any], kind: Kind, ascii_only: bool
) -> None:
    # lone surrogates: escaped they are invalid JSON, raw they are invalid UTF-8
    raw = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    check_invariants(run(raw, kind), raw)


@settings(max_examples=200, deadline=None)
@given(
    service=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and "\x00" not in s),
    ts=st.floats(min_value=NOW - 86_400, max_value=NOW + 60),
    level=st.sampled_from(["debug", "INFO", "Warning", "err", 60, "CRITICAL"]),
)
def test_valid_logs_are_always_accepted(service: str, ts: float, level: object) -> None:
    rec = accepted({"ts": ts, "service": service, "level": level, "msg": "m"})
    assert rec.service == service.strip()
    assert rec.event_time == pytest.approx(ts)
    assert rec.level in LEVELS
