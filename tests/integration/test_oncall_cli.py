"""The on-call commands as an engineer runs them: `python -m rtmh.cli ...` subprocesses on a
migrated PostgreSQL (POSTGRES_URL), checked against the rows they write.

Incidents, their workflow and timeline; id prefixes; silences; rule backtests from a file and
by name; and the issue's end-to-end check: a silence added from the CLI mutes the notification
of an incident the real rules engine opens, and once `rtmh silence expire` ends it, the next
one goes out.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from rtmh.config import load_settings
from rtmh.rules import store
from rtmh.rules.engine import RuleEngine

from .test_backtest_sql import HOUR, insert_windows


class Rtmh:
    """`rtmh` as a subprocess on the test's database."""

    def __init__(self, env: dict[str, str], db_url: str) -> None:
        # a wide table whatever the runner's terminal (rich reads the width from a terminal on
        # stdin, which an xdist worker does not have): the checks read whole cells
        self.env = {**env, "POSTGRES_URL": db_url, "COLUMNS": "200"}

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "rtmh.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def rtmh(cli_env: dict[str, str], db_url: str) -> Rtmh:
    return Rtmh(cli_env, db_url)


def _incident(db_url: str, key: str = "checkout", incident_id: str | None = None) -> str:
    """An incident row as the rules engine writes one for the sample rule high_error_rate."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO incidents (id, title, severity, status, source, rule_id, window_key, "
            "fingerprint, last_value, peak_value, threshold, metadata) "
            "SELECT coalesce(%s::uuid, gen_random_uuid()), %s, 'high', 'open', "
            "'error_rate_monitor', id, %s, id || ':' || %s || ':' || %s, 0.3, 0.4, 0.05, %s "
            "FROM alert_rules WHERE name = 'high_error_rate' RETURNING id::text",
            (
                incident_id,
                f"error rate on {key}",
                key,
                key,
                uuid.uuid4().hex[:6],
                Jsonb(
                    {
                        "rule_name": "high_error_rate",
                        "condition": ">",
                        "trigger": {"value": 0.3, "threshold": 0.05, "reason": "0.3 > 0.05"},
                        "recent_changes": [{"at": "2026-12-01T10:00:00+00:00", "type": "deploy"}],
                    }
                ),
            ),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _timeline(db_url: str, incident_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT event_type, from_status, to_status, actor,"
            " coalesce(details->>'message', details->>'comment') "
            "FROM incident_events WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        ).fetchall()


# --- incidents --------------------------------------------------------------------------------
def test_list_show_and_the_workflow_write_the_timeline(rtmh: Rtmh, db_url: str) -> None:
    checkout = _incident(db_url, "checkout")
    _incident(db_url, "payments")

    page = rtmh.json("incidents", "--service", "checkout")
    assert [i["id"] for i in page["items"]] == [checkout] and page["next_cursor"] is None
    assert page["items"][0]["rule_name"] == "high_error_rate"
    table = rtmh("incidents", "--since", "1h", "--status", "open").stdout
    assert checkout[:8] in table and "payments" in table and "0.3 > 0.05" not in table
    assert "0.3 (threshold 0.05)" in table

    short = checkout[:8]
    shown = rtmh("incident", "show", short).stdout
    for part in ("error rate on checkout", "why it fired", "0.3 > 0.05", "deploy", "timeline"):
        assert part in shown
    assert rtmh.json("incident", "show", checkout)["why"]["threshold"] == 0.05

    acked = rtmh("incident", "ack", short, "-m", "looking", "--as", "alice").stdout
    assert "open -> investigating" in acked
    rtmh("incident", "note", short, "--message", "rolled back", "--as", "alice")
    rtmh("incident", "assign", short, "--to", "bob", "--as", "alice")
    rtmh("incident", "resolve", short, "--as", "alice")
    closed = rtmh.json("incident", "close", short, "--as", "alice")
    assert closed["status"] == "closed" and closed["assignee"] == "bob"

    rows = _timeline(db_url, checkout)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("status_changed", "open", "investigating", "cli:alice"),
        ("comment", None, None, "cli:alice"),
        ("assigned", None, None, "cli:alice"),
        ("resolved", "investigating", "resolved", "cli:alice"),
        ("closed", "resolved", "closed", "cli:alice"),
    ]
    assert rows[0][4] == "looking" and rows[1][4] == "rolled back"

    refused = rtmh("incident", "ack", short, code=1)
    assert refused.stderr.strip() == (
        f"error: cannot acknowledge incident {checkout}: status change closed -> investigating "
        "is not allowed (from closed: nothing)"
    )
    assert len(_timeline(db_url, checkout)) == 5
    assert [i["id"] for i in rtmh.json("incidents", "--status", "closed")["items"]] == [checkout]


def test_the_actor_defaults_to_the_os_user(rtmh: Rtmh, db_url: str) -> None:
    incident = _incident(db_url)
    rtmh("incident", "note", incident, "-m", "hello")
    assert _timeline(db_url, incident)[0][3] == f"cli:{getpass.getuser()}"


def test_id_prefixes_and_bad_flags_are_one_line_errors(rtmh: Rtmh, db_url: str) -> None:
    a = _incident(db_url, "a", "abcd0000-0000-4000-8000-000000000001")
    b = _incident(db_url, "b", "abcd1000-0000-4000-8000-000000000002")

    assert rtmh.json("incident", "show", "ABCD0")["id"] == a
    assert rtmh.json("incident", "show", "abcd-1")["id"] == b  # dashes anywhere, as UUIDs
    assert rtmh.json("incident", "show", b.replace("-", "").upper())["id"] == b
    ambiguous = rtmh("incident", "show", "abcd", code=1).stderr
    assert ambiguous.count("\n") == 1 and "'abcd' is ambiguous: 2 incidents" in ambiguous
    assert "give more characters" in ambiguous
    missing = rtmh("incident", "ack", "ffff", code=1).stderr
    assert (
        missing.strip()
        == "error: no incident with an id starting 'ffff'; `rtmh incidents` lists them"
    )
    assert "no incident 'x-y?'" in rtmh("incident", "show", "x-y?", code=1).stderr

    bad = rtmh("incidents", "--since", "2w", code=2).stderr
    assert bad.strip() == "error: --since: '2w' is not a duration; use e.g. 90s, 15m, 2h or 1d"
    zoneless = rtmh("incidents", "--since", "2026-12-01T10:00", code=2).stderr
    assert "has no time zone" in zoneless
    # the service's own validation: one line, exit 1
    assert (
        "status: unknown value 'opened'" in rtmh("incidents", "--status", "opened", code=1).stderr
    )


# --- silences ---------------------------------------------------------------------------------
def test_silence_add_list_expire(rtmh: Rtmh, db_url: str) -> None:
    added = rtmh.json(
        "silence", "add", "--match", "service=checkout", "--match", "severity=low",
        "--for", "2h", "--comment", "deploy window", "--as", "ana",
    )  # fmt: skip
    assert added["state"] == "active" and added["created_by"] == "cli:ana"
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT matchers, ends_at - starts_at, comment FROM silences WHERE id = %s",
            (added["id"],),
        ).fetchone()
    assert row == ({"service": "checkout", "severity": "low"}, timedelta(hours=2), "deploy window")

    listed = rtmh("silence", "list").stdout
    assert "service=checkout severity=low" in listed and "deploy window" in listed
    assert [s["id"] for s in rtmh.json("silence", "list")] == [added["id"]]

    expired = rtmh("silence", "expire", str(added["id"])).stdout
    assert f"silence {added['id']} expired" in expired
    assert rtmh.json("silence", "list") == []
    assert [s["state"] for s in rtmh.json("silence", "list", "--expired")] == ["expired"]
    rtmh("silence", "expire", str(added["id"]))  # again: no change, no error

    refused = rtmh("silence", "add", "--match", "team=x", "--for", "1h", "--comment", "c", code=1)
    assert "matchers.team: unknown matcher" in refused.stderr
    assert (
        "key=glob"
        in rtmh("silence", "add", "--match", "x", "--for", "1h", "--comment", "c", code=2).stderr
    )
    assert (
        "either --for"
        in rtmh("silence", "add", "--match", "service=x", "--comment", "c", code=2).stderr
    )
    assert "no silence 99999" in rtmh("silence", "expire", "99999", code=1).stderr


# --- backtest ---------------------------------------------------------------------------------
RULE_A = {"name": "bt_a", "metric_type": "error_rate", "condition": ">", "threshold": 0.05,
          "resolve_after_seconds": 20}  # fmt: skip
RULE_B = {**RULE_A, "name": "bt_b", "threshold": 0.9}


def test_backtest_from_a_file_and_by_name(rtmh: Rtmh, db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_windows(conn, services=3, bursting=2, hours=1)
    span = ("--since", HOUR.isoformat(), "--until", (HOUR + timedelta(hours=1)).isoformat())

    single = tmp_path / "rule.json"
    single.write_text(json.dumps(RULE_A))
    result = rtmh.json("rules", "backtest", str(single), *span)
    assert [i["window_key"] for i in result["incidents"]] == ["s00", "s01"]
    opened = datetime.fromisoformat(result["incidents"][0]["opened_at"])
    assert opened == HOUR + timedelta(minutes=21)
    assert result["summary"]["rule"] == "bt_a" and result["summary"]["keys_matched"] == 3

    config = tmp_path / "rtmh.yaml"
    config.write_text(f"rules:\n  - {json.dumps(RULE_A)}\n  - {json.dumps(RULE_B)}\n")
    many = rtmh("rules", "backtest", str(config), *span, code=2).stderr
    assert "holds 2 rules (bt_a, bt_b); pick one with --rule NAME" in many
    assert rtmh.json("rules", "backtest", str(config), "--rule", "bt_b", *span)["incidents"] == []
    table = rtmh("rules", "backtest", str(config), "--rule", "bt_a", *span).stdout
    assert "s00" in table and "2 incident(s), 0 live at the end" in table

    by_name = rtmh.json("rules", "backtest", "high_error_rate", *span)
    assert [i["window_key"] for i in by_name["incidents"]] == ["s00", "s01"]
    assert "no alert rule with name 'nope'" in rtmh("rules", "backtest", "nope", code=1).stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmetric_type: error_rate\ncondition: '>'\nthreshold: lots\n")
    refused = rtmh("rules", "backtest", str(bad), code=1).stderr
    assert refused.strip() == f"error: {bad}: rule.threshold: must be a number, got str"
    assert "--since: '1w'" in rtmh("rules", "backtest", "x", "--since", "1w", code=2).stderr


# --- end to end: a silence from the CLI and the real rules engine --------------------------------
def _notifications(db_url: str, key: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT i.id::text, n.event, n.status, n.suppressed_by FROM alert_notifications n "
            "JOIN incidents i ON i.id = n.incident_id WHERE i.window_key = %s ORDER BY n.id",
            (key,),
        ).fetchall()


def _evaluate_until(engine: RuleEngine, db_url: str, key: str, count: int) -> None:
    """Feed the engine a firing window of ``key`` until ``count`` notifications of it exist
    (for_seconds 0 opens at the first verdict; the bound only guards against a hang)."""
    now = time.time()
    start = int(now // 10 * 10) - 50  # a 60-s window holding now
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value,"
            " count, sum) VALUES (%s, 'error_rate', to_timestamp(%s), to_timestamp(%s), 0.5,"
            " 100, 50) ON CONFLICT (window_key, metric_type, window_start) DO NOTHING",
            (key, start, start + 60),
        )
    for step in range(5):
        engine.tick(now + step)  # reloads the active silences, as the worker's tick does
        engine.evaluate_touched({(key, "error_rate", start)}, now + step)
        if len(_notifications(db_url, key)) >= count:
            return
    raise AssertionError(f"no notification #{count} for {key}: {_notifications(db_url, key)}")


def test_a_cli_silence_mutes_a_real_incident_and_its_expiry_lets_the_next_through(
    rtmh: Rtmh, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE alert_rules SET enabled = false")
        conn.execute(
            "INSERT INTO alert_rules (name, metric_type, condition, threshold, for_seconds,"
            " window_key_pattern, min_count, severity, channels) VALUES ('checkout_errors',"
            " 'error_rate', '>', 0.05, 0, '*', 1, 'low', '{demo-webhook}')"
        )
    silence = rtmh.json(
        "silence", "add", "--match", "service=checkout", "--match", "severity=low",
        "--for", "2h", "--comment", "known noisy",
    )["id"]  # fmt: skip
    # the worker's engine, driven on this thread (its own thread is not started): rules as the
    # worker loads them, silences re-read by each tick, windows handed over as a batch would
    engine = RuleEngine(load_settings(postgres_url=db_url), db_url)
    conn = engine._db()
    try:
        _run_the_story(rtmh, db_url, engine, silence)
    finally:
        conn.close()


def _run_the_story(rtmh: Rtmh, db_url: str, engine: RuleEngine, silence: int) -> None:
    engine.rules = store.load_rules(engine._db())
    _evaluate_until(engine, db_url, "checkout", 1)
    _evaluate_until(engine, db_url, "payments", 1)
    [(first, event, status, by)] = _notifications(db_url, "checkout")
    assert (event, status, by) == ("open", "suppressed", silence)
    # the silence is selective: another service's incident notifies as usual
    assert [r[1:] for r in _notifications(db_url, "payments")] == [("open", "pending", None)]

    rtmh("silence", "expire", str(silence))
    rtmh("incident", "close", first[:8], "-m", "muted while the deploy ran")
    # the close's 'resolve' and the new incident's 'open' both go out now
    _evaluate_until(engine, db_url, "checkout", 3)
    rows = _notifications(db_url, "checkout")
    assert [r[1:] for r in rows] == [
        ("open", "suppressed", silence),
        ("resolve", "pending", None),
        ("open", "pending", None),
    ]
    assert rows[2][0] != first  # a closed incident stays closed: the firing opened a new one
    listed = rtmh.json("incidents", "--service", "checkout")["items"]
    assert [i["status"] for i in listed] == ["open", "closed"]
