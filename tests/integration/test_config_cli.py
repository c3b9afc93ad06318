"""`rtmh config check|apply|export|schema` as a user runs them: subprocesses on a real PostgreSQL.

check on good and broken files (exact lines, exit codes), apply -> apply again (no change) ->
edit -> apply (the exact diff) -> prune, failures that change nothing, and export -> apply as
a round trip that changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

GOOD = """\
channels:
  - name: ops-hook
    type: webhook
    config:
      url: http://127.0.0.1:9/hook
    secrets:
      hmac_secret: ${OPS_HOOK_HMAC}
rules:
  - name: checkout-errors
    metric_type: error_rate
    condition: ">"
    threshold: 0.05
    window_key_pattern: checkout
    severity: high
    channels: [ops-hook]
  - name: api-latency
    metric_type: latency_ms
    aggregation: p99
    condition: ">"
    threshold: 500
silences:
  - name: checkout-upgrade
    matchers: {service: checkout}
    duration: 2h
    comment: planned DB upgrade
"""


def rtmh(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "config", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.fixture
def env(cli_env: dict[str, str], db_url: str) -> dict[str, str]:
    # a wide terminal: the findings are one line each whatever the width, the diff too
    return {
        **cli_env,
        "POSTGRES_URL": db_url,
        "RTMH_ALLOWED_TARGETS": "127.0.0.1",
        "OPS_HOOK_HMAC": "first-secret",
        "COLUMNS": "200",
    }


def managed(db_url: str) -> dict[str, str | None]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT 'rule ' || name, managed_by FROM alert_rules "
            "UNION ALL SELECT 'channel ' || name, managed_by FROM notification_channels "
            "UNION ALL SELECT 'silence ' || name, managed_by FROM silences WHERE name IS NOT NULL"
        ).fetchall()
    return {str(k): v for k, v in rows}


# --- check --------------------------------------------------------------------------------------


def test_check_accepts_a_good_file_without_a_database(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "rtmh.yaml").write_text(
        GOOD + "  - name: old\n    matchers: {rule: x}\n    ends_at: 2020-01-01T00:00:00Z\n"
    )
    (tmp_path / "more.yaml").write_text(
        "rules:\n"
        "  - name: never\n    metric_type: error_rate\n    condition: '>'\n    threshold: 1\n"
        "  - name: always\n    metric_type: log_count\n    condition: '>='\n    threshold: 0\n"
    )
    # no OPS_HOOK_HMAC, no database: check needs neither
    done = rtmh({**cli_env, "COLUMNS": "200"}, tmp_path, "check", "rtmh.yaml", "more.yaml")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["ok: 4 rules, 1 channel, 2 silences in 2 file(s), 3 warning(s)"]
    assert lines(done.stderr) == [
        "rtmh.yaml:28:14: warning: silences[1].ends_at: ended at 2020-01-01T00:00:00+00:00: "
        "it mutes nothing; remove it from the file",
        "more.yaml:5:16: warning: rules[0].threshold: the rule can never fire: error_rate value "
        "is [0, 1], so '> 1' is never true",
        "more.yaml:9:16: warning: rules[1].threshold: the rule always fires: log_count value "
        "is >= 0, so '>= 0' is always true",
    ]


BROKEN = {
    "types.yaml": """\
rules:
  - name: a
    metric_type: error_rate
    condition: ">"
    threshold: high
  - name: b
    metric_type: error_rate
    condition: ">"
    threshold: .nan
  - name: c
    metric_type: error-rate
    condition: ">"
    threshold: 0.1
  - name: d
    metric_type: error_rate
    condition: ">"
    threshold: 0.1
    window_key_pattern: "check[out"
  - name: e
    metric_type: error_rate
    condition: ">"
    threshold: 0.1
    treshold: 0.2
  - name: f
    metric_type: error_rate
    condition: ">"
    threshold: 0.1
    channels: [pager]
""",
    "dupes.yaml": """\
rules:
  - name: f
    metric_type: log_count
    condition: ">"
    threshold: 100
channels:
  - name: slack
    type: slack
    secrets:
      url: https://hooks.slack.com/services/T0/B0/XYZ
  - name: hook
    type: webhook
    config: {url: "https://hooks.example.com/x"}
    secrets: {hmac_secret: "${9LIVES}"}
silences:
  - name: s
    matchers: {svc: checkout}
    duration: 1h
""",
}


def test_check_refuses_broken_files_saying_where_and_what(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    done = rtmh({**cli_env, "COLUMNS": "200"}, tmp_path, "check", *BROKEN)
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    allowed = (
        "name, source, metric_type, aggregation, condition, threshold, recovery_threshold, "
        "for_seconds, window_key_pattern, min_count, no_data_seconds, resolve_after_seconds, "
        "severity, channels, enabled, repeat_interval_seconds, description, runbook_url"
    )
    assert lines(done.stderr) == [
        "types.yaml:5:16: rules[0].threshold: must be a number, got str",
        "types.yaml:9:16: rules[1].threshold: must be finite, got nan; write a plain number "
        "such as 0.05",
        "types.yaml:11:18: rules[2].metric_type: unknown metric type 'error-rate'; did you mean "
        "error_rate? use one of log_count, error_count, error_rate, event_count or the name of "
        "a metric sent on the metrics topic (letters, digits, _ . : / -)",
        "types.yaml:18:25: rules[3].window_key_pattern: 'check[out' is not a valid pattern: "
        "'[' at position 6 is never closed; close the set with ']' or write a literal '[' as "
        "'[[]'",
        f"types.yaml:23:5: rules[4].treshold: unknown key (did you mean threshold?); allowed: "
        f"{allowed}",
        "dupes.yaml:10:12: channels[0].secrets.url: a literal secret in a file; write a "
        "reference such as ${MY_SECRET} and set that environment variable when you run "
        "`rtmh config apply`",
        "dupes.yaml:14:28: channels[1].secrets.hmac_secret: malformed reference ${9LIVES}: a "
        "variable name is letters, digits and '_', not starting with a digit",
        "dupes.yaml:17:21: silences[0].matchers.svc: unknown matcher; use rule, service, severity",
        "dupes.yaml:2:11: rules[0].name: duplicate rule name 'f' (first declared at "
        "types.yaml:24:11); names must be unique across all files",
        "types.yaml:28:16: rules[5].channels: channel 'pager' is not defined; add it under "
        "channels: or remove it from the rule",
        "10 error(s), 0 warning(s) in 2 file(s); nothing is valid until the errors are fixed",
    ]


def test_check_refuses_what_is_not_a_config_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - name: x\n    threshold: [1\n")
    (tmp_path / "b.yaml").write_text("rule:\n  - name: x\nrules:\n  rules: 1\n")
    done = rtmh({**cli_env, "COLUMNS": "200"}, tmp_path, "check", "a.yaml", "b.yaml")
    assert done.returncode == 1
    assert lines(done.stderr)[:3] == [
        "a.yaml:4:1: not valid YAML: expected ',' or ']', but got '<stream end>'",
        "b.yaml:1:1: rule: unknown key; allowed: rules, channels, silences",
        "b.yaml:4:3: rules: must be a list, got mapping",
    ]
    # usage errors are 2, as everywhere in rtmh
    assert rtmh(cli_env, tmp_path, "check", "missing.yaml").returncode == 2


def test_check_with_a_database_warns_about_patterns_that_match_nothing(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value) "
            "VALUES ('checkout', 'error_rate', now() - interval '1 minute', now(), 0.01)"
        )
    (tmp_path / "rtmh.yaml").write_text(GOOD.replace("pattern: checkout", "pattern: chekout*"))
    done = rtmh(env, tmp_path, "check", "rtmh.yaml")
    assert done.returncode == 0, done.stderr
    assert lines(done.stderr) == [
        "rtmh.yaml:13:25: warning: rules[0].window_key_pattern: 'chekout*' matches no service "
        "seen in the last day; check the spelling",
        "rtmh.yaml:17:18: warning: rules[1].metric_type: no metric 'latency_ms' was seen in "
        "the last day; check the name",
    ]
    assert lines(rtmh(env, tmp_path, "check", "--no-db", "rtmh.yaml").stderr) == []


# --- apply --------------------------------------------------------------------------------------


def test_apply_syncs_prints_the_diff_and_is_idempotent(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "rtmh.yaml"
    config.write_text(GOOD)
    first = rtmh(env, tmp_path, "apply", "rtmh.yaml")
    assert first.returncode == 0, first.stderr
    assert lines(first.stdout) == [
        "+ channel ops-hook: created",
        "+ rule api-latency: created",
        "+ rule checkout-errors: created",
        "+ silence checkout-upgrade: created",
        "4 created",
    ]
    owners = managed(db_url)
    assert owners["rule checkout-errors"] == "rtmh.yaml"
    assert owners["channel ops-hook"] == "rtmh.yaml"
    assert owners["silence checkout-upgrade"] == "rtmh.yaml"
    assert owners["rule high_cpu"] is None  # the sample rules stay hand-made

    again = rtmh(env, tmp_path, "apply", "rtmh.yaml")
    assert again.returncode == 0, again.stderr
    assert lines(again.stdout)[-1] == "no change (4 unchanged)"

    config.write_text(
        GOOD.replace("threshold: 0.05", "threshold: 0.1\n    for_seconds: 30").replace(
            "planned DB upgrade", "DB upgrade, ticket OPS-12"
        )
    )
    edited_env = {**env, "OPS_HOOK_HMAC": "second-secret"}
    dry = rtmh(edited_env, tmp_path, "apply", "--dry-run", "rtmh.yaml")
    assert dry.returncode == 0, dry.stderr
    expected = [
        "~ channel ops-hook: changed",
        "    secrets.hmac_secret: (secret) -> (secret)",
        "= rule api-latency: unchanged",
        "~ rule checkout-errors: changed",
        "    threshold: 0.05 -> 0.1",
        "    for_seconds: 0 -> 30",
        "~ silence checkout-upgrade: changed",
        "    comment: 'planned DB upgrade' -> 'DB upgrade, ticket OPS-12'",
    ]
    assert lines(dry.stdout) == [*expected, "dry run, nothing applied: 3 changed, 1 unchanged"]
    edited = rtmh(edited_env, tmp_path, "apply", "rtmh.yaml")
    assert lines(edited.stdout) == [*expected, "3 changed, 1 unchanged"]
    assert "second-secret" not in edited.stdout + edited.stderr
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT threshold, for_seconds FROM alert_rules WHERE name = 'checkout-errors'"
        ).fetchone()
        secrets = conn.execute(
            "SELECT secrets FROM notification_channels WHERE name = 'ops-hook'"
        ).fetchone()
    assert row == (0.1, 30)
    assert secrets == ({"hmac_secret": "second-secret"},)

    # JSON for scripts; without --prune nothing is removed
    config.write_text(GOOD.split("  - name: api-latency")[0])
    kept = rtmh(edited_env, tmp_path, "apply", "--json", "rtmh.yaml")
    report = json.loads(kept.stdout)
    assert report["changed"] is True
    assert [(c["kind"], c["name"], c["action"]) for c in report["changes"]] == [
        ("channel", "ops-hook", "unchanged"),
        ("rule", "checkout-errors", "change"),
    ]
    assert "rule api-latency" in managed(db_url)

    pruned = rtmh(edited_env, tmp_path, "apply", "--prune", "rtmh.yaml")
    assert pruned.returncode == 0, pruned.stderr
    assert lines(pruned.stdout) == [
        "= channel ops-hook: unchanged",
        "- rule api-latency: removed",
        "= rule checkout-errors: unchanged",
        "- silence checkout-upgrade: removed",
        "2 removed, 2 unchanged",
    ]
    after = managed(db_url)
    assert "rule api-latency" not in after
    assert after["rule high_cpu"] is None  # hand-made: never pruned
    with psycopg.connect(db_url) as conn:
        live = conn.execute(
            "SELECT count(*) FROM silences WHERE name = 'checkout-upgrade' AND ends_at > now()"
        ).fetchone()
    assert live == (0,)
    assert lines(rtmh(edited_env, tmp_path, "apply", "--prune", "rtmh.yaml").stdout)[-1] == (
        "no change (2 unchanged)"
    )


def test_a_failed_apply_changes_nothing(env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    (tmp_path / "rtmh.yaml").write_text(GOOD)
    before = managed(db_url)

    unset = {k: v for k, v in env.items() if k != "OPS_HOOK_HMAC"}
    done = rtmh(unset, tmp_path, "apply", "rtmh.yaml")
    assert done.returncode == 1
    assert lines(done.stderr) == [
        "rtmh.yaml:7:20: channels[0].secrets.hmac_secret: environment variable OPS_HOOK_HMAC "
        "is not set; export it before apply",
        "1 error(s): nothing applied",
    ]

    # the API's target guard: refused at apply time, after the rows were read and diffed
    strict = {k: v for k, v in env.items() if k != "RTMH_ALLOWED_TARGETS"}
    done = rtmh(strict, tmp_path, "apply", "rtmh.yaml")
    assert done.returncode == 1
    assert lines(done.stderr) == [
        "error: rtmh.yaml:2:5: channels[0].config.url: 127.0.0.1 is a loopback address; add it "
        "to RTMH_ALLOWED_TARGETS to allow it"
    ]
    assert managed(db_url) == before

    # prune refuses to orphan a hand-made rule that uses a managed channel: nothing changes
    assert rtmh(env, tmp_path, "apply", "rtmh.yaml").returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alert_rules (name, metric_type, condition, threshold, channels) "
            "VALUES ('by-hand', 'log_count', '>', 5, '{ops-hook}')"
        )
    (tmp_path / "rtmh.yaml").write_text("rules: []\n")
    applied = managed(db_url)
    done = rtmh(env, tmp_path, "apply", "--prune", "rtmh.yaml")
    assert done.returncode == 1
    assert lines(done.stderr) == [
        "error: channel 'ops-hook' is no longer declared but rule(s) by-hand made by hand "
        "still use it; remove it from them or declare the channel"
    ]
    assert managed(db_url) == applied


def test_export_then_apply_is_a_round_trip_without_change(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "rtmh.yaml").write_text(GOOD)
    assert rtmh(env, tmp_path, "apply", "rtmh.yaml").returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notification_channels (name, type, config, secrets) VALUES "
            "('hand-hook', 'webhook', '{\"url\": \"http://127.0.0.1:9/x\"}', "
            '\'{"headers": {"Authorization": "Bearer tok"}}\')'
        )
    exported = rtmh(env, tmp_path, "export")
    assert exported.returncode == 0, exported.stderr
    assert "first-secret" not in exported.stdout and "Bearer tok" not in exported.stdout
    assert "hmac_secret: ${RTMH_SECRET_OPS_HOOK_HMAC_SECRET}" in exported.stdout
    assert lines(exported.stderr) == [
        "apply needs these environment variables:",
        "  RTMH_SECRET_HAND_HOOK_HEADERS_AUTHORIZATION  (channel hand-hook "
        "secrets.headers.Authorization)",
        "  RTMH_SECRET_OPS_HOOK_HMAC_SECRET  (channel ops-hook secrets.hmac_secret)",
    ]
    (tmp_path / "exported.yaml").write_text(exported.stdout)
    assert rtmh(env, tmp_path, "check", "--no-db", "exported.yaml").returncode == 0

    secrets = {
        "RTMH_SECRET_OPS_HOOK_HMAC_SECRET": "first-secret",
        "RTMH_SECRET_HAND_HOOK_HEADERS_AUTHORIZATION": "Bearer tok",
    }
    done = rtmh({**env, **secrets}, tmp_path, "apply", "exported.yaml")
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert out[-1] == "no change (11 unchanged)"
    assert "= rule checkout-errors: unchanged (now managed by exported.yaml, was rtmh.yaml)" in out
    assert "= rule high_cpu: unchanged (adopted: was made by hand, now managed by the file)" in out
    # and again from the new owner: nothing at all to say
    again = rtmh({**env, **secrets}, tmp_path, "apply", "exported.yaml")
    assert all(line.endswith(": unchanged") for line in lines(again.stdout)[:-1]), again.stdout


def test_schema_is_json_schema_of_the_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = rtmh(cli_env, tmp_path, "schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {"rules", "channels", "silences"}
    rule = schema["properties"]["rules"]["items"]
    assert rule["required"] == ["name", "metric_type", "condition", "threshold"]
    assert rule["additionalProperties"] is False and "id" not in rule["properties"]
