"""The named queries (db/queries/*.sql): every file parses, names are unique, and the column
lists the code formats rows for agree with the SQL that receives them."""

from __future__ import annotations

from importlib import resources

import pytest

from rtmh.db.queries import load, parse
from rtmh.ingest.copy_text import RAW_COLUMNS


def stages() -> list[str]:
    folder = resources.files("rtmh.db").joinpath("queries")
    return sorted(p.name.removesuffix(".sql") for p in folder.iterdir() if p.name.endswith(".sql"))


@pytest.mark.parametrize("stage", stages())
def test_every_query_file_parses_into_named_queries(stage: str) -> None:
    queries = load(stage)
    assert queries.names(), f"db/queries/{stage}.sql holds no named query"
    for name in queries.names():
        assert getattr(queries, name).strip()


def test_a_name_given_twice_or_a_query_without_text_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse("x", "-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    with pytest.raises(ValueError, match="no text"):
        parse("x", "-- name: a\n-- name: b\nSELECT 2\n")


def test_an_unknown_query_name_says_which_file() -> None:
    with pytest.raises(AttributeError, match=r"db/queries/ingest\.sql"):
        _ = load("ingest").no_such_query


def test_comments_stay_with_their_query() -> None:
    parsed = parse("x", "-- header\n\n-- name: a\n-- why a\nSELECT 1\n")
    assert parsed == {"a": "-- why a\nSELECT 1"}


def test_raw_events_copy_names_the_columns_the_formatter_writes() -> None:
    text = load("ingest").copy_raw_events
    sql = " ".join(" ".join(ln for ln in text.splitlines() if not ln.startswith("--")).split())
    assert f"COPY raw_events ({' '.join(RAW_COLUMNS.split())}) FROM STDIN" == sql


def test_the_bench_poison_check_refuses_the_bench_poison_message() -> None:
    from rtmh.bench.safety_net import POISON

    assert f"'{POISON}'" in load("bench").add_poison_check
