"""Citus's rules, checked on the migrated catalog against rtmh.db.citus.TABLES (issue 22).

There is no Citus package for this machine, so nothing here runs against a Citus cluster: these
tests encode what `create_distributed_table` / `create_reference_table` check before they accept a
table (Citus source: commands/table.c ErrorIfUnsupportedConstraint, commands/foreign_constraint.c
ErrorIfUnsupportedForeignConstraintExists, commands/create_distributed_table.c
EnsureRelationCanBeDistributed; docs/scaling.md cites them), read from pg_class, pg_inherits,
pg_attribute, pg_index, pg_constraint and pg_trigger of a freshly migrated database. A later
migration that breaks one of them fails here, naming the table and the index or constraint.

Each rule is a function of (catalog, classification) returning the problems it finds, and each
has a companion test that builds a table breaking it (in the test's own throwaway database),
classifies it, and checks the rule reports it: no rule here can pass by reading nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psycopg
import pytest

from rtmh.db.citus import TABLES, Kind, Placement

Classification = Mapping[str, Placement]

PUBLIC = "n.nspname = 'public'"


@dataclass(frozen=True)
class Column:
    type: str
    collation: int
    not_null: bool
    generated: str


@dataclass(frozen=True)
class UniqueIndex:
    table: str  # the table holding the index (a partition's own name for a partition's index)
    name: str
    kind: str  # primary key | unique index | exclusion constraint
    keys: tuple[str, ...]  # key columns (INCLUDE columns and expressions left out)
    operators: tuple[str, ...]  # per key: '=' for unique indexes, the operator for exclusions


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    references: str
    referenced: tuple[str, ...]


@dataclass(frozen=True)
class Trigger:
    table: str
    name: str
    function: str
    source: str


@dataclass
class Catalog:
    tables: set[str] = field(default_factory=set)  # public tables that are not partitions
    parent: dict[str, str] = field(default_factory=dict)  # partition -> partitioned table
    columns: dict[tuple[str, str], Column] = field(default_factory=dict)
    unique: list[UniqueIndex] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)

    def root(self, table: str) -> str:
        """The table a partition (of a partition ...) belongs to; a table is its own root."""
        while table in self.parent:
            table = self.parent[table]
        return table

    def shown(self, table: str) -> str:
        root = self.root(table)
        return table if root == table else f"{table} (partition of {root})"


def read_catalog(conn: psycopg.Connection) -> Catalog:
    cat = Catalog()
    cat.tables = {
        r[0]
        for r in conn.execute(
            f"""SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE {PUBLIC} AND c.relkind IN ('r', 'p') AND NOT c.relispartition"""
        )
    }
    cat.parent = dict(
        conn.execute(
            f"""SELECT c.relname, p.relname FROM pg_inherits i
                JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
                JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {PUBLIC}"""
        ).fetchall()
    )
    for table, name, type_, collation, not_null, generated in conn.execute(
        f"""SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attcollation,
                   a.attnotnull, a.attgenerated
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {PUBLIC} AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"""
    ):
        cat.columns[(table, name)] = Column(type_, collation, not_null, generated)
    # key columns only (ordinality <= indnkeyatts): an INCLUDE column enforces no uniqueness
    for table, name, primary, exclusion, keys, operators in conn.execute(
        f"""SELECT c.relname, i.relname, x.indisprimary, x.indisexclusion,
                   ARRAY(SELECT a.attname FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(num, o)
                         JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.num
                         WHERE k.o <= x.indnkeyatts ORDER BY k.o),
                   ARRAY(SELECT CASE WHEN x.indisexclusion THEN
                                    (SELECT o.oprname FROM pg_operator o
                                     WHERE o.oid = con.conexclop[k.o]) ELSE '=' END
                         FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(num, o)
                         WHERE k.o <= x.indnkeyatts AND k.num <> 0 ORDER BY k.o)
            FROM pg_index x
            JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype = 'x'
            WHERE {PUBLIC} AND (x.indisunique OR x.indisexclusion)"""
    ):
        kind = "primary key" if primary else "exclusion constraint" if exclusion else "unique index"
        cat.unique.append(UniqueIndex(table, name, kind, tuple(keys), tuple(operators)))
    # conparentid = 0: the key as declared, not the copies PostgreSQL makes for partitions
    for name, table, columns, references, referenced in conn.execute(
        f"""SELECT con.conname, src.relname,
                   ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, o)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
                         ORDER BY k.o),
                   dst.relname,
                   ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, o)
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
                         ORDER BY k.o)
            FROM pg_constraint con
            JOIN pg_class src ON src.oid = con.conrelid JOIN pg_class dst ON dst.oid = con.confrelid
            JOIN pg_namespace n ON n.oid = src.relnamespace
            WHERE {PUBLIC} AND con.contype = 'f' AND con.conparentid = 0"""
    ):
        cat.foreign_keys.append(
            ForeignKey(name, table, tuple(columns), references, tuple(referenced))
        )
    for table, name, function, source in conn.execute(
        f"""SELECT c.relname, t.tgname, p.proname, p.prosrc FROM pg_trigger t
            JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {PUBLIC} AND NOT t.tgisinternal AND t.tgparentid = 0"""
    ):
        cat.triggers.append(Trigger(table, name, function, source))
    return cat


# ------------------------------------------------------------------------------------- the rules


def unclassified(cat: Catalog, tables: Classification) -> list[str]:
    """Every table is classified exactly once (a dict cannot hold a name twice), and every
    classified table exists: a new table must say where it lives on Citus."""
    problems = [
        f"table {t} is not classified in rtmh.db.citus.TABLES (distributed, reference or local? "
        "see docs/scaling.md)"
        for t in sorted(cat.tables - set(tables))
    ]
    problems += [
        f"rtmh.db.citus.TABLES classifies {t}, which the migrations do not create"
        for t in sorted(set(tables) - cat.tables)
    ]
    return problems


def unique_without_distribution_column(cat: Catalog, tables: Classification) -> list[str]:
    """Citus refuses a PRIMARY KEY, UNIQUE index or EXCLUDE constraint on a distributed table
    (partitions included) unless it contains the distribution column (with '=' for EXCLUDE)."""
    problems = []
    for index in cat.unique:
        placement = tables.get(cat.root(index.table))
        if placement is None or placement.kind is not Kind.DISTRIBUTED:
            continue
        column = placement.column
        pairs = zip(index.keys, index.operators, strict=True)
        covered = any(key == column and op == "=" for key, op in pairs)
        if not covered:
            problems.append(
                f"{cat.shown(index.table)}: {index.kind} {index.name} ({', '.join(index.keys)}) "
                f"lacks the distribution column {column}"
            )
    return problems


def distribution_column_not_usable(cat: Catalog, tables: Classification) -> list[str]:
    """A distribution column exists, is NOT NULL (Citus refuses a row with NULL there) and is
    not a generated column (Citus refuses to distribute by one)."""
    problems = []
    for table, p in tables.items():
        if p.kind is not Kind.DISTRIBUTED or table not in cat.tables:
            continue
        column = cat.columns.get((table, p.column or ""))
        if column is None:
            problems.append(f"{table}: distribution column {p.column} does not exist")
        elif not column.not_null:
            problems.append(f"{table}: distribution column {p.column} is nullable (SET NOT NULL)")
        elif column.generated:
            problems.append(f"{table}: distribution column {p.column} is a generated column")
    return problems


def _colocation_root(table: str, tables: Classification) -> str:
    while (nxt := tables[table].colocate_with) is not None:
        table = nxt
    return table


def foreign_keys_into_distributed(cat: Catalog, tables: Classification) -> list[str]:
    """A foreign key may point into a distributed table only from a distributed table
    co-located with it, over the distribution column in the same position on both sides."""
    problems = []
    for fk in cat.foreign_keys:
        source, target = cat.root(fk.table), cat.root(fk.references)
        dst = tables.get(target)
        if dst is None or dst.kind is not Kind.DISTRIBUTED:
            continue
        src = tables.get(source)
        where = f"{cat.shown(fk.table)}: foreign key {fk.name} -> {target}"
        if src is None or src.kind is not Kind.DISTRIBUTED:
            kind = src.kind if src else "unclassified"
            problems.append(f"{where}: a {kind} table cannot reference a distributed table")
        elif _colocation_root(source, tables) != _colocation_root(target, tables):
            problems.append(f"{where}: {source} is not co-located with {target}")
        elif not any(
            a == src.column and b == dst.column
            for a, b in zip(fk.columns, fk.referenced, strict=True)
        ):
            problems.append(
                f"{where}: ({', '.join(fk.columns)}) does not pair {src.column} with {dst.column}"
            )
    return problems


def _fk_targets(
    cat: Catalog, tables: Classification, source_kind: Kind, allowed: set[Kind], why: str
) -> list[str]:
    problems = []
    for fk in cat.foreign_keys:
        source, target = cat.root(fk.table), cat.root(fk.references)
        src, dst = tables.get(source), tables.get(target)
        if src is None or src.kind is not source_kind or source == target:
            continue
        if dst is None or dst.kind not in allowed:
            kind = dst.kind if dst else "unclassified"
            problems.append(
                f"{cat.shown(fk.table)}: foreign key {fk.name} -> {target} points to a {kind} "
                f"table; {why}"
            )
    return problems


def distributed_foreign_keys(cat: Catalog, tables: Classification) -> list[str]:
    """A distributed table references only reference tables (or a co-located distributed one,
    which foreign_keys_into_distributed checks)."""
    why = "a distributed table may reference only reference tables"
    return _fk_targets(cat, tables, Kind.DISTRIBUTED, {Kind.REFERENCE, Kind.DISTRIBUTED}, why)


def reference_foreign_keys(cat: Catalog, tables: Classification) -> list[str]:
    """A reference table (a copy on every node) references only reference tables."""
    why = "a reference table may reference only reference tables"
    return _fk_targets(cat, tables, Kind.REFERENCE, {Kind.REFERENCE}, why)


def local_foreign_keys(cat: Catalog, tables: Classification) -> list[str]:
    """A local table references local or reference tables; a key between a local and a
    reference table (either way) needs the local table in Citus's metadata (in_metadata)."""
    why = "a local table may reference only local or reference tables"
    problems = _fk_targets(cat, tables, Kind.LOCAL, {Kind.LOCAL, Kind.REFERENCE}, why)
    for fk in cat.foreign_keys:
        source, target = cat.root(fk.table), cat.root(fk.references)
        for local, other in ((source, target), (target, source)):
            lp, op = tables.get(local), tables.get(other)
            tied = lp and op and lp.kind is Kind.LOCAL and op.kind is Kind.REFERENCE
            if tied and lp and not lp.in_metadata:
                problems.append(
                    f"{local}: foreign key {fk.name} joins it to reference table {other}: "
                    "Citus then needs it in metadata (Placement(in_metadata=True))"
                )
    return problems


NOTIFY = re.compile(r"\bpg_notify\b|\bnotify\b", re.IGNORECASE)


def triggers_on_shards(cat: Catalog, tables: Classification) -> list[str]:
    """Triggers on a distributed or reference table run on its shards: the classification must
    say so (the calls then set citus.enable_unsafe_triggers), and none may NOTIFY, because a
    write to shards on several nodes commits with PREPARE TRANSACTION, which PostgreSQL refuses
    after a NOTIFY."""
    problems = []
    for trigger in cat.triggers:
        table = cat.root(trigger.table)
        p = tables.get(table)
        if p is None or p.kind is Kind.LOCAL:
            continue
        where = f"{cat.shown(trigger.table)}: trigger {trigger.name} ({trigger.function})"
        if not p.triggers:
            problems.append(f"{where}: the {p.kind} table is not marked triggers=True")
        if NOTIFY.search(trigger.source):
            problems.append(f"{where} NOTIFYs, which two-phase commit refuses on a shard")
    return problems


def colocation_mismatch(cat: Catalog, tables: Classification) -> list[str]:
    """Co-located tables have distribution columns of the same type and collation."""
    problems = []
    for table, p in tables.items():
        if p.kind is not Kind.DISTRIBUTED or p.colocate_with is None:
            continue
        other = tables.get(p.colocate_with)
        if other is None or other.kind is not Kind.DISTRIBUTED:
            problems.append(f"{table}: co-located with {p.colocate_with}, not a distributed table")
            continue
        mine = cat.columns.get((table, p.column or ""))
        theirs = cat.columns.get((p.colocate_with, other.column or ""))
        if mine and theirs and (mine.type, mine.collation) != (theirs.type, theirs.collation):
            problems.append(
                f"{table}.{p.column} ({mine.type}) cannot be co-located with "
                f"{p.colocate_with}.{other.column} ({theirs.type})"
            )
    return problems


Rule = Callable[[Catalog, Classification], list[str]]
RULES: list[Rule] = [
    unclassified,
    unique_without_distribution_column,
    distribution_column_not_usable,
    foreign_keys_into_distributed,
    distributed_foreign_keys,
    reference_foreign_keys,
    local_foreign_keys,
    triggers_on_shards,
    colocation_mismatch,
]


# --------------------------------------------------------------------- the migrated schema holds


@pytest.fixture
def catalog(db_url: str) -> Catalog:
    with psycopg.connect(db_url) as conn:
        return read_catalog(conn)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_the_migrated_schema_keeps_citus_rules(catalog: Catalog, rule: Rule) -> None:
    problems = rule(catalog, TABLES)
    assert not problems, "\n".join(problems)


def test_the_catalog_reader_sees_the_schema(catalog: Catalog) -> None:
    """The rules read what they should: raw_events' key and partitions, metrics_agg's unique
    key, the local foreign keys, metrics_agg's trigger."""
    keys = {(i.table, i.name): i.keys for i in catalog.unique}
    assert keys[("raw_events", "raw_events_pkey")] == ("id", "service", "created_at")
    assert keys[("metrics_agg", "metrics_agg_window_unique")][0] == "window_key"
    assert catalog.root("raw_events_default") == "raw_events"
    assert any(t.startswith("raw_events_2") for t in catalog.parent)  # the daily partitions
    assert {(fk.table, fk.references) for fk in catalog.foreign_keys} == {
        ("incidents", "alert_rules"),
        ("incident_events", "incidents"),
        ("alert_notifications", "incidents"),
        ("notification_attempts", "alert_notifications"),
        ("web_sessions", "api_tokens"),
    }
    assert ("metrics_agg", "trg_metrics_agg_updated_at") in {
        (t.table, t.name) for t in catalog.triggers
    }


# ------------------------------------------------------------------------- each rule can fail


def _broken(db_url: str, ddl: str) -> Catalog:
    with psycopg.connect(db_url) as conn:
        conn.execute(ddl)
        return read_catalog(conn)


def read_catalog_of(db_url: str) -> Catalog:
    with psycopg.connect(db_url) as conn:
        return read_catalog(conn)


def _with(**extra: Placement) -> dict[str, Placement]:
    return {**TABLES, **extra}


def _only(problems: list[str], *needles: str) -> None:
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], problems[0]


def test_a_new_table_must_be_classified(db_url: str) -> None:
    cat = _broken(db_url, "CREATE TABLE rogue (x int)")
    _only(unclassified(cat, TABLES), "rogue", "not classified")
    gone = _with(ghost=Placement(Kind.LOCAL, "test"))
    assert "ghost" in "".join(unclassified(read_catalog_of(db_url), gone))


def test_a_unique_index_on_a_partition_without_service_is_reported(db_url: str) -> None:
    cat = _broken(db_url, "CREATE UNIQUE INDEX uq_rogue ON raw_events_default (id, created_at)")
    _only(
        unique_without_distribution_column(cat, TABLES),
        "raw_events_default (partition of raw_events)",
        "uq_rogue",
        "service",
    )


def test_a_primary_key_without_the_column_and_an_include_column_are_reported(
    db_url: str,
) -> None:
    cat = _broken(
        db_url,
        "CREATE TABLE shard_me (k text NOT NULL, id int,"
        " CONSTRAINT shard_me_pkey PRIMARY KEY (id));"
        "CREATE UNIQUE INDEX uq_shard_me ON shard_me (id) INCLUDE (k)",
    )
    problems = unique_without_distribution_column(
        cat, _with(shard_me=Placement(Kind.DISTRIBUTED, "test", column="k"))
    )
    assert len(problems) == 2, problems
    assert "primary key shard_me_pkey (id)" in problems[0] + problems[1]
    assert "unique index uq_shard_me (id)" in problems[0] + problems[1]


def test_an_exclusion_constraint_needs_equality_on_the_column(db_url: str) -> None:
    cat = _broken(
        db_url,
        "CREATE TABLE spans (k int NOT NULL, r int4range,"
        " CONSTRAINT spans_no_overlap EXCLUDE USING gist (r WITH &&));",
    )
    _only(
        unique_without_distribution_column(
            cat, _with(spans=Placement(Kind.DISTRIBUTED, "test", column="k"))
        ),
        "exclusion constraint spans_no_overlap",
    )


def test_a_nullable_missing_or_generated_distribution_column_is_reported(db_url: str) -> None:
    cat = _broken(
        db_url,
        "CREATE TABLE a (k text); CREATE TABLE b (x int);"
        "CREATE TABLE c (x int NOT NULL, k int NOT NULL GENERATED ALWAYS AS (x * 2) STORED)",
    )
    classified = _with(
        a=Placement(Kind.DISTRIBUTED, "test", column="k"),
        b=Placement(Kind.DISTRIBUTED, "test", column="k"),
        c=Placement(Kind.DISTRIBUTED, "test", column="k"),
    )
    problems = distribution_column_not_usable(cat, classified)
    assert problems == [
        "a: distribution column k is nullable (SET NOT NULL)",
        "b: distribution column k does not exist",
        "c: distribution column k is a generated column",
    ]


def test_a_foreign_key_into_raw_events_is_reported(db_url: str) -> None:
    ddl = (
        "CREATE TABLE {t} (id bigint, service text NOT NULL, created_at timestamptz, {col} text,"
        " CONSTRAINT {t}_fk FOREIGN KEY ({cols}) REFERENCES raw_events (id, service, created_at))"
    )
    cat = _broken(
        db_url,
        ";".join(
            [
                ddl.format(t="notes", col="x", cols="id, service, created_at"),
                ddl.format(t="far", col="x", cols="id, service, created_at"),
                ddl.format(t="skew", col="other", cols="id, other, created_at"),
                ddl.format(t="near", col="x", cols="id, service, created_at"),
            ]
        ),
    )
    classified = _with(
        notes=Placement(Kind.LOCAL, "test"),
        far=Placement(Kind.DISTRIBUTED, "test", column="service"),
        skew=Placement(Kind.DISTRIBUTED, "test", column="service", colocate_with="raw_events"),
        near=Placement(Kind.DISTRIBUTED, "test", column="service", colocate_with="raw_events"),
    )
    problems = foreign_keys_into_distributed(cat, classified)
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert "notes: foreign key notes_fk -> raw_events: a local table cannot" in text
    assert "far: foreign key far_fk -> raw_events: far is not co-located" in text
    assert "skew: foreign key skew_fk -> raw_events: (id, other, created_at) does not pair" in text


def test_a_distributed_table_referencing_a_local_table_is_reported(db_url: str) -> None:
    cat = _broken(
        db_url,
        "CREATE TABLE hits (k text NOT NULL,"
        " rule_id integer CONSTRAINT hits_rule_fk REFERENCES alert_rules (id))",
    )
    problems = distributed_foreign_keys(
        cat, _with(hits=Placement(Kind.DISTRIBUTED, "test", column="k"))
    )
    _only(problems, "hits: foreign key hits_rule_fk -> alert_rules points to a local table")


def test_a_reference_table_referencing_a_local_table_is_reported(db_url: str) -> None:
    cat = _broken(
        db_url,
        "CREATE TABLE tags (name text PRIMARY KEY,"
        " rule_id integer CONSTRAINT tags_rule_fk REFERENCES alert_rules (id))",
    )
    problems = reference_foreign_keys(cat, _with(tags=Placement(Kind.REFERENCE, "test")))
    _only(problems, "tags: foreign key tags_rule_fk -> alert_rules points to a local table")


def test_a_local_table_tied_to_a_reference_table_must_be_in_metadata(db_url: str) -> None:
    # alert_rules made a reference table: incidents (local) then references it
    as_reference = _with(alert_rules=Placement(Kind.REFERENCE, "test"))
    cat = read_catalog_of(db_url)
    _only(local_foreign_keys(cat, as_reference), "incidents", "incidents_rule_id_fkey")
    in_metadata = {
        **as_reference,
        "incidents": Placement(Kind.LOCAL, "test", in_metadata=True),
    }
    assert local_foreign_keys(cat, in_metadata) == []
    # and a local table may not reference a distributed one
    cat = _broken(
        db_url,
        "CREATE TABLE marks (k text NOT NULL PRIMARY KEY); CREATE TABLE pins (k text"
        " CONSTRAINT pins_k_fk REFERENCES marks (k))",
    )
    classified = _with(
        marks=Placement(Kind.DISTRIBUTED, "test", column="k"), pins=Placement(Kind.LOCAL, "test")
    )
    _only(local_foreign_keys(cat, classified), "pins_k_fk -> marks points to a distributed table")


def test_a_notifying_or_undeclared_trigger_on_a_distributed_table_is_reported(
    db_url: str,
) -> None:
    cat = _broken(
        db_url,
        "CREATE TRIGGER trg_metrics_agg_notify AFTER INSERT ON metrics_agg"
        " FOR EACH STATEMENT EXECUTE FUNCTION rtmh_notify_rules_changed()",
    )
    _only(triggers_on_shards(cat, TABLES), "trg_metrics_agg_notify", "NOTIFYs")
    undeclared = _with(
        metrics_agg=Placement(
            Kind.DISTRIBUTED, "test", column="window_key", colocate_with="raw_events"
        )
    )
    assert len(triggers_on_shards(read_catalog_of(db_url), undeclared)) == 3
    # alert_rules could not be a reference table: its trigger NOTIFYs
    as_reference = _with(alert_rules=Placement(Kind.REFERENCE, "test", triggers=True))
    problems = triggers_on_shards(read_catalog_of(db_url), as_reference)
    assert any("alert_rules: trigger trg_alert_rules_changed" in p for p in problems), problems


def test_co_located_columns_of_different_types_are_reported(db_url: str) -> None:
    cat = _broken(db_url, "CREATE TABLE counters (k bigint NOT NULL)")
    classified = _with(
        counters=Placement(Kind.DISTRIBUTED, "test", column="k", colocate_with="raw_events")
    )
    _only(colocation_mismatch(cat, classified), "counters.k (bigint)", "raw_events.service (text)")


# --------------------------------------------------------------------- rtmh migrate --distribute


def test_migrate_distribute_without_citus_says_what_to_do(
    db_url: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "POSTGRES_URL": db_url}
    with psycopg.connect(db_url) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'citus'"
        ).fetchone()
    assert available is None, "this PostgreSQL has Citus: test --distribute on it for real"
    result = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "migrate", "--distribute"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert "up to date 006_records_and_distribution_keys.sql" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: the citus extension is not installed in this database")
    assert "CREATE EXTENSION citus" in lines[0] and "docs/scaling.md" in lines[0]


def test_the_schema_before_006_breaks_the_rules(empty_db_url: str) -> None:
    """What issue 22 found: up to 005, raw_events' key lacked service and service was
    nullable. The rules catch both on that schema."""
    from rtmh.db import migrate

    files = [f for f in migrate.load_files() if f.version < "006"]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.apply_pending(conn, files)
        cat = read_catalog(conn)
    problems = unique_without_distribution_column(cat, TABLES)
    assert (
        "raw_events: primary key raw_events_pkey (id, created_at) lacks the distribution column "
        "service"
    ) in problems
    # and the key each partition carries, the default one and the daily ones
    partitions = [t for t, parent in cat.parent.items() if parent == "raw_events"]
    assert len(problems) == 1 + len(partitions) >= 3, problems
    assert any(p.startswith("raw_events_default (partition of raw_events)") for p in problems)
    _only(distribution_column_not_usable(cat, TABLES), "raw_events: distribution column service")
