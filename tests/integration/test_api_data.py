"""The API's read-only data resources for real: metrics series and keys, the raw-event search
and dead letters, served by `rtmh api` on a migrated PostgreSQL and driven over HTTP.

Rows are written with SQL as the pipeline writes them; each test uses names of its own (services,
topics, window keys), so the module's one database serves them all.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from .api_support import Api, expect_problem, running_api


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(
        module_db_url, tmp_path_factory.mktemp("api-data"), token_prefix="data"
    ) as running:
        yield running


def _pages(client: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= params.get("limit", 50)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


# --- metrics ------------------------------------------------------------------------------------
def _window(
    conn: psycopg.Connection[Any], key: str, metric: str, start: datetime, value: float, n: int
) -> None:
    conn.execute(
        "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value, "
        "count, sum, min, max, p50, p95, p99, sketch) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 1, 0.5, 0.9, 0.99, '{}')",
        (key, metric, start, start + timedelta(seconds=60), value, n, value * n),
    )


def test_metric_series_is_one_key_and_type_in_range_oldest_first(api: Api) -> None:
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        # written out of order, with a neighbour key and type that must not show
        for i in (5, 1, 3, 0, 4, 2):
            _window(conn, "data-series", "error_rate", base + timedelta(seconds=10 * i), i / 10, 50)
        _window(conn, "data-series", "log_count", base, 50, 50)
        _window(conn, "data-series-2", "error_rate", base, 0.9, 50)
    with api.client("read") as reader:
        params = {
            "window_key": "data-series",
            "metric_type": "error_rate",
            "since": (base + timedelta(seconds=10)).isoformat(),
            "until": (base + timedelta(seconds=50)).isoformat(),
        }
        body = reader.get("/api/v1/metrics/series", params=params).json()
        starts = [p["window_start"] for p in body["points"]]
        assert [datetime.fromisoformat(s) for s in starts] == [
            base + timedelta(seconds=10 * i) for i in (1, 2, 3, 4)
        ]
        assert [p["value"] for p in body["points"]] == [0.1, 0.2, 0.3, 0.4]
        first = body["points"][0]
        assert first["count"] == 50 and first["sum"] == pytest.approx(5.0)
        assert (first["p50"], first["p95"], first["p99"]) == (0.5, 0.9, 0.99)
        assert "sketch" not in first and body["truncated"] is False
        cut = reader.get("/api/v1/metrics/series", params={**params, "limit": 2}).json()
        assert len(cut["points"]) == 2 and cut["truncated"] is True
        # the default range is the last hour: these windows are long gone
        recent = reader.get(
            "/api/v1/metrics/series", params={"window_key": "data-series", "metric_type": "x"}
        ).json()
        assert recent["points"] == []
        until = datetime.fromisoformat(recent["until"])
        assert until - datetime.fromisoformat(recent["since"]) == timedelta(hours=1)
        assert abs(until - datetime.now(UTC)) < timedelta(minutes=5)

        week = {**params, "since": (base - timedelta(days=8)).isoformat()}
        body = expect_problem(reader.get("/api/v1/metrics/series", params=week), 422, "since")
        assert "at most 7 days" in body["detail"]
        naive = {**params, "since": "2026-03-01T12:00:00"}
        body = expect_problem(reader.get("/api/v1/metrics/series", params=naive), 422, "since")
        assert "time zone" in body["detail"]
        backwards = {**params, "until": base.isoformat()}
        expect_problem(reader.get("/api/v1/metrics/series", params=backwards), 422, "until")
        expect_problem(
            reader.get("/api/v1/metrics/series", params={"metric_type": "error_rate"}),
            422,
            "window_key",
        )
        expect_problem(
            reader.get("/api/v1/metrics/series", params={**params, "limit": 0}), 422, "limit"
        )
        expect_problem(
            reader.get("/api/v1/metrics/series", params={**params, "since": "soon"}), 422
        )


def test_metric_keys_give_each_recent_keys_newest_value_per_type(api: Api) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        for age, rate in ((300, 0.1), (120, 0.2), (60, 0.3)):
            _window(conn, "data-keys-a", "error_rate", now - timedelta(seconds=age), rate, 100)
        _window(conn, "data-keys-a", "log_count", now - timedelta(seconds=300), 100, 100)
        _window(conn, "data-keys-b", "http_ms", now - timedelta(seconds=30), 42.5, 7)
        _window(conn, "data-keys-old", "error_rate", now - timedelta(hours=2), 0.5, 100)
    with api.client("read") as reader:
        listed = reader.get("/api/v1/metrics/keys")
        assert listed.status_code == 200, listed.text
        keys = {k["window_key"]: k for k in listed.json() if k["window_key"].startswith("data-")}
        assert sorted(keys) == ["data-keys-a", "data-keys-b"]
        a = keys["data-keys-a"]
        assert a["metrics"]["error_rate"]["value"] == 0.3
        assert datetime.fromisoformat(a["metrics"]["error_rate"]["window_start"]) == (
            now - timedelta(seconds=60)
        )
        assert a["metrics"]["log_count"]["value"] == 100
        assert datetime.fromisoformat(a["latest_window_start"]) == now - timedelta(seconds=60)
        assert keys["data-keys-b"]["metrics"]["http_ms"]["count"] == 7
        wider = reader.get("/api/v1/metrics/keys", params={"since_minutes": 180}).json()
        assert "data-keys-old" in {k["window_key"] for k in wider}
        narrow = reader.get("/api/v1/metrics/keys", params={"since_minutes": 1}).json()
        assert "data-keys-a" not in {k["window_key"] for k in narrow}
        expect_problem(
            reader.get("/api/v1/metrics/keys", params={"since_minutes": 0}), 422, "since_minutes"
        )
        expect_problem(
            reader.get("/api/v1/metrics/keys", params={"since_minutes": "x"}), 422, "since_minutes"
        )


# --- events -------------------------------------------------------------------------------------
def _event(
    conn: psycopg.Connection[Any],
    offset: int,
    *,
    service: str,
    at: datetime,
    level: str = "info",
    topic: str = "data-logs",
    msg: str | None = None,
    message: str | None = None,
) -> int:
    data: dict[str, Any] = {"level": level, "service": service}
    if msg is not None:
        data["msg"] = msg
    if message is not None:
        data["message"] = message
    row = conn.execute(
        "INSERT INTO raw_events (topic, kafka_partition, kafka_offset, data, event_time, "
        "service, host, level, flags) VALUES (%s, 0, %s, %s, %s, %s, 'h1', %s, '{}') RETURNING id",
        (topic, offset, Jsonb(data), at, service, level),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_events_filter_by_service_level_topic_and_literal_text(api: Api) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        full = _event(
            conn, 1, service="data-f", at=now - timedelta(minutes=1), level="error",
            msg="Disk 100% full_ on /var",
        )  # fmt: skip
        # would match if % or _ in the search were wildcards
        _event(conn, 2, service="data-f", at=now, level="error", msg="disk 100X fullXon /var")
        said = _event(
            conn, 3, service="data-f", at=now - timedelta(minutes=2), level="warn",
            topic="data-audit", message="DISK 100% FULL_ again",
        )  # fmt: skip
        _event(conn, 4, service="data-f", at=now - timedelta(minutes=3), msg="fine")
        _event(conn, 5, service="data-g", at=now, level="error", msg="disk 100% full_")
        _event(conn, 6, service="data-f", at=now - timedelta(hours=3), level="error", msg="old")
    with api.client("read") as reader:

        def ids(**params: Any) -> list[int]:
            got = reader.get("/api/v1/events", params=params)
            assert got.status_code == 200, got.text
            return [e["id"] for e in got.json()["items"]]

        found = reader.get("/api/v1/events", params={"service": "data-f", "q": "disk 100% full_"})
        assert [e["id"] for e in found.json()["items"]] == [full, said]
        event = found.json()["items"][0]
        assert event["data"] == {
            "level": "error",
            "service": "data-f",
            "msg": "Disk 100% full_ on /var",
        }
        assert (event["topic"], event["partition"], event["offset"]) == ("data-logs", 0, 1)
        assert (event["generation"], event["record_index"], event["host"]) == (0, 0, "h1")
        assert event["service"] == "data-f" and event["level"] == "error" and event["flags"] == []
        assert ids(service="data-f", level="error", q="100% full_") == [full]
        assert ids(service="data-f", level=["error", "warn"], q="FULL_") == [full, said]
        assert ids(service="data-f", topic="data-audit") == [said]
        # without a service: every service, by arrival (id), newest first
        assert ids(q="disk 100% full_") == sorted(
            [*ids(q="disk 100% full_", service="data-g"), full, said], reverse=True
        )
        assert len(ids(service="data-f")) == 4  # the last hour by default
        # stored now, happened 3 h ago (a backlog): a search of then finds it
        old = ids(
            service="data-f",
            since=(now - timedelta(hours=4)).isoformat(),
            until=(now - timedelta(hours=2)).isoformat(),
        )
        assert len(old) == 1
        assert ids(q="nothing like it") == []

        body = expect_problem(
            reader.get("/api/v1/events", params={"level": "loud"}), 422, "level.0"
        )
        assert "'error'" in body["errors"][0]["message"]
        expect_problem(reader.get("/api/v1/events", params={"limit": 0}), 422, "limit")
        expect_problem(reader.get("/api/v1/events", params={"limit": 501}), 422, "limit")
        expect_problem(reader.get("/api/v1/events", params={"q": ""}), 422, "q")
        body = expect_problem(
            reader.get("/api/v1/events", params={"until": "2026-12-01T10:00:00"}), 422, "until"
        )
        assert "time zone" in body["detail"]
        expect_problem(
            reader.get("/api/v1/events", params={"since": now.isoformat(), "until": "2026-01-01Z"}),
            422,
            "until",
        )
        expect_problem(
            reader.get("/api/v1/events", params={"since": (now - timedelta(days=8)).isoformat()}),
            422,
            "since",
        )
        expect_problem(reader.get("/api/v1/events", params={"cursor": "garbage"}), 422, "cursor")
        expect_problem(reader.get("/api/v1/events", params={"q": "a\x00b"}), 422, "q")
        expect_problem(reader.get("/api/v1/events", params={"service": "\x00"}), 422, "service")
        paths = reader.get("/openapi.json").json()["paths"]
        for path in ("events", "metrics/series", "metrics/keys", "dead-letters/{dead_letter_id}"):
            assert f"/api/v1/{path}" in paths
    with api.client(None) as anonymous:
        expect_problem(anonymous.get("/api/v1/events"), 401)
        expect_problem(anonymous.get("/api/v1/metrics/keys"), 401)
        expect_problem(anonymous.get("/api/v1/dead-letters"), 401)


def test_event_pages_have_no_gaps_or_repeats_in_either_order(api: Api) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        # three share an event time: the id breaks the tie
        times = [now - timedelta(seconds=s) for s in (50, 40, 30, 30, 30, 20, 10, 5)]
        made = [
            _event(conn, 100 + i, service="data-pages", at=t, topic="data-pages", msg=f"m{i}")
            for i, t in enumerate(times)
        ]
        # a late arrival: stored last, happened first
        late = _event(
            conn, 200, service="data-pages", at=now - timedelta(minutes=9), topic="data-pages"
        )
    by_time = sorted(
        [*zip(times, made, strict=True), (now - timedelta(minutes=9), late)], reverse=True
    )
    with api.client("read") as reader:
        items = _pages(reader, "/api/v1/events", {"service": "data-pages", "limit": 3})
        assert [e["id"] for e in items] == [i for _, i in by_time]
        items = _pages(reader, "/api/v1/events", {"topic": "data-pages", "limit": 2})
        assert [e["id"] for e in items] == sorted([*made, late], reverse=True)
        # a cursor continues the kind of search that made it
        first = reader.get("/api/v1/events", params={"service": "data-pages", "limit": 2}).json()
        expect_problem(
            reader.get("/api/v1/events", params={"cursor": first["next_cursor"]}), 422, "cursor"
        )
        other = reader.get("/api/v1/events", params={"topic": "data-pages", "limit": 2}).json()
        expect_problem(
            reader.get(
                "/api/v1/events", params={"service": "data-pages", "cursor": other["next_cursor"]}
            ),
            422,
            "cursor",
        )


# --- dead letters -------------------------------------------------------------------------------
def _dead_letter(
    conn: psycopg.Connection[Any],
    topic: str,
    offset: int,
    payload: bytes | None,
    key: bytes | None = None,
    created_at: datetime | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, message_key, payload, "
        "reason, broker_time, created_at, record_index) "
        "VALUES (%s, 1, %s, %s, %s, 'invalid_json: test', now(), %s, NULL) RETURNING id",
        (topic, offset, key, payload, created_at or datetime.now(UTC)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_dead_letters_list_pages_and_one_with_its_exact_bytes(api: Api) -> None:
    same = datetime.now(UTC) - timedelta(minutes=5)
    broken = b'{"msg": "caf\xc3\xa9 \xff\xfe broken"\x00'
    big = b"a" * 4095 + "é".encode() + b"tail" * 100  # é straddles the 4 KiB cut
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        made = [
            _dead_letter(conn, "data-dlq", 10, broken, b"\x00k\xff", same),
            _dead_letter(conn, "data-dlq", 11, big, None, same),
            _dead_letter(conn, "data-dlq", 12, None, None, same),
            _dead_letter(conn, "data-dlq", 13, b"{}", b"key", same + timedelta(seconds=1)),
            _dead_letter(conn, "data-dlq-other", 14, b"x"),
        ]
    with api.client("read") as reader:
        items = _pages(reader, "/api/v1/dead-letters", {"topic": "data-dlq", "limit": 2})
        assert [d["id"] for d in items] == [made[3], made[2], made[1], made[0]]
        assert [d["size"] for d in items] == [2, None, len(big), len(broken)]
        first = items[-1]
        assert (first["topic"], first["partition"], first["offset"]) == ("data-dlq", 1, 10)
        assert first["reason"] == "invalid_json: test" and first["record_index"] is None
        assert "payload_base64" not in first
        since = (same + timedelta(milliseconds=500)).isoformat()
        recent = reader.get("/api/v1/dead-letters", params={"topic": "data-dlq", "since": since})
        assert [d["id"] for d in recent.json()["items"]] == [made[3]]

        one = reader.get(f"/api/v1/dead-letters/{made[0]}").json()
        assert base64.b64decode(one["payload_base64"]) == broken
        assert base64.b64decode(one["key_base64"]) == b"\x00k\xff"
        assert one["preview"] == broken.decode("utf-8", errors="replace")
        assert "café" in one["preview"] and "\ufffd" in one["preview"]
        assert one["preview_truncated"] is False and one["size"] == len(broken)
        cut = reader.get(f"/api/v1/dead-letters/{made[1]}").json()
        assert base64.b64decode(cut["payload_base64"]) == big and cut["key_base64"] is None
        assert cut["preview"] == "a" * 4095 and cut["preview_truncated"] is True
        empty = reader.get(f"/api/v1/dead-letters/{made[2]}").json()
        assert empty["payload_base64"] is None and empty["preview"] is None

        body = expect_problem(reader.get("/api/v1/dead-letters/999999999"), 404)
        assert "999999999" in body["detail"]
        expect_problem(reader.get("/api/v1/dead-letters/abc"), 422, "dead_letter_id")
        expect_problem(reader.get("/api/v1/dead-letters/0"), 422, "dead_letter_id")
        expect_problem(reader.get("/api/v1/dead-letters", params={"limit": 1000}), 422, "limit")
        expect_problem(reader.get("/api/v1/dead-letters", params={"cursor": "x!"}), 422, "cursor")
        body = expect_problem(
            reader.get("/api/v1/dead-letters", params={"since": "2026-12-01T00:00:00"}),
            422,
            "since",
        )
        assert "time zone" in body["detail"]
