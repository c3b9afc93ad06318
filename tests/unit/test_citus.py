"""rtmh.db.citus without a server: the calls, their order and text, and docs/scaling.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtmh.db import citus
from rtmh.db.citus import TABLES, Kind, Placement, Step, plan, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def rendered(tables: dict[str, Placement] | None = None) -> list[str]:
    return [render(s) for s in plan(TABLES if tables is None else tables)]


def test_the_calls_distribute_raw_events_then_metrics_agg_co_located() -> None:
    calls = rendered()
    tables = [c for c in calls if "create_distributed_table" in c]
    assert tables == [
        "SELECT create_distributed_table('raw_events', 'service')",
        "SELECT create_distributed_table('metrics_agg', 'window_key', "
        "colocate_with => 'raw_events')",
    ]
    # the functions the shards run come first; triggers are allowed just before metrics_agg
    functions = [c for c in calls if "create_distributed_function" in c]
    assert calls[: len(functions)] == functions
    assert len(functions) == len(citus.SHARD_FUNCTIONS)
    assert calls.index("SET citus.enable_unsafe_triggers TO on") == calls.index(tables[1]) - 1
    assert not any("create_reference_table" in c or "local_table" in c for c in calls)


def test_docs_show_exactly_the_calls_the_code_runs() -> None:
    text = DOC.read_text()
    block = text.split("## The calls", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == rendered()


def test_docs_table_classifies_every_table_as_the_code_does() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\w+)[^|]*\| (?:`(\w+)`)? *\|", DOC.read_text(), re.M)
    assert {name: (kind, column or None) for name, kind, column in rows} == {
        name: (p.kind.value, p.column) for name, p in TABLES.items()
    }


def test_reference_and_metadata_tables_come_before_the_distributed_ones() -> None:
    tables = {
        "facts": Placement(Kind.DISTRIBUTED, "t", column="k", triggers=True),
        "lookup": Placement(Kind.REFERENCE, "t", triggers=True),
        "notes": Placement(Kind.LOCAL, "t", in_metadata=True),
        "plain": Placement(Kind.LOCAL, "t"),
    }
    calls = [c for c in rendered(tables) if "function" not in c]
    assert calls == [
        "SET citus.enable_unsafe_triggers TO on",
        "SELECT create_reference_table('lookup')",
        "SELECT citus_add_local_table_to_metadata('notes')",
        "SELECT create_distributed_table('facts', 'k')",
    ]
    assert citus.needs_coordinator_in_metadata(tables)
    assert not citus.needs_coordinator_in_metadata(TABLES)
    # no distributed table: no shard functions either
    assert rendered({"lookup": Placement(Kind.REFERENCE, "t")}) == [
        "SELECT create_reference_table('lookup')"
    ]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"a": Placement(Kind.DISTRIBUTED, "t")}, "needs a distribution column"),
        ({"a": Placement(Kind.LOCAL, "t", column="k")}, "only a distributed table"),
        (
            {
                "a": Placement(Kind.DISTRIBUTED, "t", column="k", colocate_with="b"),
                "b": Placement(Kind.DISTRIBUTED, "t", column="k"),
            },
            "not a distributed table listed before it",
        ),
    ],
)
def test_a_classification_citus_would_refuse_is_refused(
    tables: dict[str, Placement], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan(tables)


def test_render_writes_literals_and_counts_placeholders() -> None:
    step = Step("citus_create_reference_table", ("it's",), "it's", "table")
    assert render(step) == "SELECT create_reference_table('it''s')"
    with pytest.raises(ValueError, match="1 placeholders, 0 values"):
        render(Step("citus_create_reference_table"))


def test_migrate_distribute_print_shows_the_calls_without_a_database(
    cli_env: dict[str, str],
) -> None:
    env = {**cli_env, "POSTGRES_URL": "postgresql://nobody@127.0.0.1:1/none"}

    def rtmh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rtmh.cli", "migrate", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    result = rtmh("--distribute", "--print")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == rendered()
    alone = rtmh("--print")
    assert alone.returncode == 2
    assert "--print goes with --distribute" in alone.stderr
