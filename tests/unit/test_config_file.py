"""The config file of `rtmh config` without a database: marks, the validators' errors mapped
to file:line:col, secrets as ${VAR} references, firing warnings, durations and the schema."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rtmh.rules.model import validate_rule
from rtmh.service.config_file import (
    glob_problem,
    json_schema,
    load_config,
    metric_type_problem,
    parse_duration,
    resolve_refs,
    silence_period,
)
from rtmh.service.errors import Invalid

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # findings name the file as it was given: relative, like a user's `rtmh config check c.yaml`
    monkeypatch.chdir(tmp_path)


def _load(tmp_path: Path, text: str, name: str = "c.yaml") -> list[str]:
    (tmp_path / name).write_text(text)
    return [str(p) for p in load_config([Path(name)], now=NOW).problems]


def test_the_documented_example_is_a_valid_file(tmp_path: Path) -> None:
    example = re.search(r"```yaml\n(# alerts/checkout.yaml\n.*?)```", DOCS.read_text(), re.S)
    assert example is not None
    (tmp_path / "checkout.yaml").write_text(example.group(1))
    config = load_config([Path("checkout.yaml")], now=NOW)
    assert [str(p) for p in config.problems] == []
    assert (len(config.rules), len(config.channels), len(config.silences)) == (3, 3, 2)


def _rule(condition: str, threshold: float, metric: str = "error_rate", **extra: object) -> str:
    fields = "".join(f"\n    {k}: {v}" for k, v in extra.items())
    return (
        f"rules:\n  - name: r\n    metric_type: {metric}\n    condition: '{condition}'\n"
        f"    threshold: {threshold}{fields}\n"
    )


@pytest.mark.parametrize(
    ("condition", "threshold", "metric", "verdict"),
    [
        (">", 1, "error_rate", "never"),
        (">=", 1, "error_rate", None),
        (">", 0.05, "error_rate", None),
        ("<", 1.5, "error_rate", "always"),
        ("<=", 1, "error_rate", "always"),
        ("<", 0, "log_count", "never"),
        (">=", 0, "error_count", "always"),
        (">", 0, "event_count", None),
        ("==", -1, "log_count", "never"),
        ("!=", 2, "error_rate", "always"),
        (">", -5, "cpu_usage", None),  # a metric of its own: no known range
    ],
)
def test_rules_that_never_or_always_fire_are_warned_about(
    tmp_path: Path, condition: str, threshold: float, metric: str, verdict: str | None
) -> None:
    found = _load(tmp_path, _rule(condition, threshold, metric))
    if verdict is None:
        assert found == []
    else:
        [line] = found
        assert line.startswith("c.yaml:5:16: warning: rules[0].threshold: ")
        assert ("never fire" if verdict == "never" else "always fires") in line


def test_an_absence_rule_is_not_called_always_firing(tmp_path: Path) -> None:
    text = _rule("<", 1, "log_count", aggregation="count", no_data_seconds=60, min_count=0)
    assert _load(tmp_path, text) == []


def test_errors_point_at_the_value_and_name_the_field(tmp_path: Path) -> None:
    assert _load(tmp_path, _rule(">", "oops")) == [  # type: ignore[arg-type]
        "c.yaml:5:16: rules[0].threshold: must be a number, got str"
    ]
    assert _load(tmp_path, _rule(">", 0.1, severity="urgent")) == [
        "c.yaml:6:15: rules[0].severity: unknown value 'urgent'; expected one of low, medium, "
        "high, critical"
    ]
    assert _load(tmp_path, "rules:\n  - name: r\n    metric_type: x\n") == [
        "c.yaml:2:5: rules[0].condition: required; add it to the rule"
    ]
    assert _load(tmp_path, "rules:\n  - name: a\n    name: b\n") == [
        "c.yaml:3:5: duplicate key 'name'"
    ]
    assert _load(tmp_path, "- 1\n") == [
        "c.yaml:1:1: must be a mapping with rules, channels, silences"
    ]
    assert _load(tmp_path, "") == []


def test_secrets_are_references_resolved_from_the_environment() -> None:
    assert resolve_refs("${A}", {"A": "x"}, placeholder="") == "x"
    assert resolve_refs("Bearer ${A}", {"A": "x"}, placeholder="") == "Bearer x"
    assert resolve_refs("${A}", None, placeholder="https://p.invalid/") == "https://p.invalid/"
    for bad, message in (
        ("s3cret", "a literal secret in a file"),
        ("${A", "'${' is never closed"),
        ("${1A}", "malformed reference ${1A}"),
        ("${A} ${", "'${' is never closed"),
    ):
        with pytest.raises(Invalid, match=re.escape(message)):
            resolve_refs(bad, None, placeholder="")
    with pytest.raises(Invalid, match="environment variable B is not set; export it before apply"):
        resolve_refs("${B}", {}, placeholder="")


def test_channels_are_checked_by_the_notifiers_parser_with_placeholders(tmp_path: Path) -> None:
    text = (
        "channels:\n  - name: s\n    type: slack\n    secrets: {url: '${SLACK}'}\n"
        "  - name: w\n    type: webhook\n    config: {url: 'https://h.example/', colour: red}\n"
    )
    # the Slack URL's variable is not set: a placeholder URL stands in, so only the real
    # mistake is reported
    assert _load(tmp_path, text) == ["c.yaml:7:49: channels[1].config.colour: unknown setting"]


def test_globs_metric_types_and_durations() -> None:
    assert glob_problem("checkout-*") is None
    assert glob_problem("svc-[ab]") is None
    assert glob_problem("svc-[]x]") is None  # ']' first in a set is a literal
    assert "never closed" in (glob_problem("svc-[ab") or "")
    assert metric_type_problem("error_rate") is None
    assert metric_type_problem("http_request_duration_ms") is None
    assert metric_type_problem("metric:error_rate") is None
    assert "did you mean error_rate?" in (metric_type_problem("error_rat") or "")
    assert metric_type_problem("cpu usage") is not None
    assert parse_duration("90m") == 5400
    assert parse_duration("1d12h") == 129600
    assert parse_duration(30) == 30
    for bad in ("", "2 hours", 0, -1, True, math.nan):
        with pytest.raises(ValueError, match="must be a duration"):
            parse_duration(bad)


def test_a_duration_counts_from_the_first_apply(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("silences:\n  - name: s\n    matchers: {service: a}\n    duration: 1h\n")
    [silence] = load_config([path], now=NOW).silences
    first = datetime(2026, 12, 1, 11, 30, tzinfo=UTC)
    assert silence_period(silence, None, NOW) == (NOW, NOW.replace(hour=13))
    assert silence_period(silence, first, NOW) == (first, first.replace(hour=12, minute=30))


def test_the_schema_is_derived_from_the_rule_model() -> None:
    schema = json_schema()
    rule = schema["properties"]["rules"]["items"]
    defaults = validate_rule({"name": "x", "metric_type": "x", "condition": ">", "threshold": 0})
    assert rule["properties"]["min_count"]["default"] == defaults.min_count
    assert rule["properties"]["condition"]["enum"] == [">", ">=", "<", "<=", "==", "!="]
    silence = schema["properties"]["silences"]["items"]
    assert silence["required"] == ["name", "matchers"]
