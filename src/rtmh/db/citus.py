"""How RTMH's schema maps onto Citus: every table classified once, and the calls that distribute it.

PostgreSQL is the last single machine in RTMH's data flow (Kafka -> ingest -> windows -> rules ->
notify, all writing here). Citus spreads tables over several PostgreSQL nodes; this module is the
one place that says which of RTMH's tables become what (docs/scaling.md explains each choice):

- DISTRIBUTED, hash-sharded on a column: ``raw_events`` by ``service`` and ``metrics_agg`` by
  ``window_key``, co-located (a service's events and its windows land on the same shard number).
- REFERENCE, one copy on every node: none today. Nothing joins a small table with a distributed
  one, and a reference table costs a two-phase commit on every node for each write.
  ``alert_rules`` could not be one anyway: its trigger NOTIFYs, the trigger runs on every copy,
  and PostgreSQL refuses to PREPARE (two-phase commit) a transaction that has NOTIFYed.
- LOCAL, on the coordinator only: everything else. ``consumer_offsets`` and ``dead_letters``
  commit in the checkpoint transaction with ``raw_events`` and ``metrics_agg``: Citus commits the
  workers' parts with two-phase commit and makes the coordinator's own commit the deciding one,
  so a local table commits atomically with distributed ones (no need to replicate offsets).

``plan()`` turns the classification into the exact, ordered calls; ``render()`` shows them as
they run (named queries of db/queries/migrate.sql, parameters being this module's constants,
never user input); ``distribute()`` runs them on a database, skipping what is already done.
tests/integration/test_citus_schema.py checks the migrated catalog against the classification
with Citus's rules, so a later migration cannot break it unnoticed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql

from rtmh.db.queries import load

SQL = load("migrate")

#: where to read what each choice means; every message that stops `--distribute` names it
DOC = "docs/scaling.md"


class Kind(enum.StrEnum):
    DISTRIBUTED = "distributed"
    REFERENCE = "reference"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one table lives on a Citus cluster."""

    kind: Kind
    why: str
    #: the distribution column (DISTRIBUTED only)
    column: str | None = None
    #: the DISTRIBUTED table whose shards this one shares (same column type, same shard count)
    colocate_with: str | None = None
    #: the table has triggers, on purpose: Citus then wants citus.enable_unsafe_triggers to
    #: distribute it (they run on its shards; none may NOTIFY, see the module docstring)
    triggers: bool = False
    #: a LOCAL table added to Citus's metadata (citus_add_local_table_to_metadata): what Citus
    #: requires of a local table with a foreign key to or from a REFERENCE table
    in_metadata: bool = False


_D, _R, _L = Kind.DISTRIBUTED, Kind.REFERENCE, Kind.LOCAL

#: every table of the public schema, in the order its calls run (a table before those that
#: name it in colocate_with or reference it). Partitions follow their parent.
TABLES: Mapping[str, Placement] = {
    "raw_events": Placement(
        _D,
        "the big one: one row per record, queried per service (recent errors and changes)",
        column="service",
    ),
    "metrics_agg": Placement(
        _D,
        "one row per (window_key, metric_type, window_start); window_key is a service name "
        "or __all__, so it shares raw_events' shards",
        column="window_key",
        colocate_with="raw_events",
        triggers=True,  # trg_metrics_agg_updated_at: sets NEW.updated_at, reads nothing else
    ),
    "consumer_offsets": Placement(
        _L,
        "written in every checkpoint with raw_events; a local row lock is the fence, and "
        "Citus's two-phase commit keeps it atomic with the distributed writes",
    ),
    "dead_letters": Placement(_L, "written in the checkpoint transaction; rare, read by people"),
    "alert_rules": Placement(
        _L,
        "its trigger NOTIFYs rtmh_rules_changed, which a two-phase commit refuses on a copy; "
        "read whole by the rules stage, never joined with a distributed table",
    ),
    "notification_channels": Placement(_L, "a handful of rows read by the notifier"),
    "silences": Placement(_L, "a handful of rows read by the rules stage and the notifier"),
    "incidents": Placement(_L, "low volume; FOR UPDATE per fingerprint; references alert_rules"),
    "incident_events": Placement(_L, "an incident's timeline; references incidents"),
    "alert_notifications": Placement(
        _L,
        "the outbox: FOR UPDATE SKIP LOCKED and a NOTIFY trigger; references incidents",
    ),
    "api_tokens": Placement(_L, "a handful of rows read by the API"),
    "web_sessions": Placement(
        _L, "the dashboard's sign-in codes and browser sessions; references api_tokens"
    ),
    "notification_attempts": Placement(
        _L, "one row per delivery attempt, by a trigger on alert_notifications; references it"
    ),
    "stream_events": Placement(
        _L, "the live stream's replay log: appended by triggers on local tables, read by the API"
    ),
    "schema_migrations": Placement(_L, "the migrators' own bookkeeping"),
}

#: functions that run on the shards, so every node needs them. The window merge's ON CONFLICT
#: branch calls rtmh_window_value on the worker holding the row, and queries over metrics_agg
#: may call the sketch functions (003's, which 010 made read stores through rtmh_sketch_store)
#: there; the updated_at trigger runs there too (Citus would propagate a trigger's function by
#: itself; listed to be explicit).
#: create_distributed_function records them in pg_dist_object, so nodes added later get them.
SHARD_FUNCTIONS: tuple[str, ...] = (
    "rtmh_touch_updated_at()",
    "rtmh_window_mode(text)",
    "rtmh_window_value(text, bigint, double precision)",
    "rtmh_sketch_store(jsonb)",
    "rtmh_sketch_merge_store_objects(jsonb, jsonb, integer)",
    "rtmh_sketch_merge_store(jsonb, jsonb, integer)",
    "rtmh_sketch_merge(jsonb, jsonb)",
    "rtmh_sketch_ranks_objects(jsonb)",
    "rtmh_sketch_ranks(jsonb)",
    "rtmh_sketch_quantile(jsonb, double precision)",
    "rtmh_sketch_percentiles(jsonb, double precision, double precision)",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One call: a named query of db/queries/migrate.sql and its constant parameters."""

    query: str
    params: tuple[str, ...] = ()
    #: what the call acts on: a table, a function signature, or "" for a setting
    target: str = ""
    #: how to tell it was already done: "table" (in pg_dist_partition), "function"
    #: (in pg_dist_object), or "" (always run: a session setting)
    done_when: str = ""


def plan(tables: Mapping[str, Placement] = TABLES) -> list[Step]:
    """The calls that distribute ``tables``, in the order Citus needs them: the shard functions,
    then the reference tables (before anything that references them), the local tables added
    to metadata, and the distributed tables, each after the table it is co-located with.
    Raises ValueError on a classification Citus would refuse."""
    steps = [
        Step("citus_distribute_function", (f,), f, "function")
        for f in (SHARD_FUNCTIONS if any(p.kind is _D for p in tables.values()) else ())
    ]
    allowed_triggers = False

    def allow_triggers(placement: Placement) -> None:
        nonlocal allowed_triggers
        if placement.triggers and not allowed_triggers:
            steps.append(Step("citus_allow_triggers"))
            allowed_triggers = True

    for name, p in tables.items():
        if p.kind is _R:
            allow_triggers(p)
            steps.append(Step("citus_create_reference_table", (name,), name, "table"))
    for name, p in tables.items():
        if p.kind is _L and p.in_metadata:
            steps.append(Step("citus_add_local_table_to_metadata", (name,), name, "table"))
    seen: set[str] = set()
    for name, p in tables.items():
        if p.kind is not _D:
            if p.column or p.colocate_with:
                raise ValueError(f"{name}: only a distributed table has a distribution column")
            continue
        if not p.column:
            raise ValueError(f"{name}: a distributed table needs a distribution column")
        allow_triggers(p)
        if p.colocate_with is None:
            steps.append(Step("citus_create_distributed_table", (name, p.column), name, "table"))
        elif p.colocate_with in seen:
            params = (name, p.column, p.colocate_with)
            steps.append(Step("citus_create_colocated_table", params, name, "table"))
        else:
            raise ValueError(
                f"{name}: co-located with {p.colocate_with!r}, which is not a distributed table "
                "listed before it"
            )
        seen.add(name)
    return steps


def needs_coordinator_in_metadata(tables: Mapping[str, Placement] = TABLES) -> bool:
    """Citus keeps a local table in its metadata only when the coordinator is a node of the
    cluster (citus_set_coordinator_host)."""
    return any(p.kind is _L and p.in_metadata for p in tables.values())


def render(step: Step) -> str:
    """The call as it runs, parameters written as SQL literals, without the query's comments."""
    text = " ".join(
        line.strip()
        for line in getattr(SQL, step.query).splitlines()
        if line.strip() and not line.lstrip().startswith("--")
    )
    pieces = text.split("%s")
    if len(pieces) != len(step.params) + 1:
        raise ValueError(f"{step.query}: {len(pieces) - 1} placeholders, {len(step.params)} values")
    out = pieces[0]
    for value, piece in zip(step.params, pieces[1:], strict=True):
        out += sql.Literal(value).as_string(None) + piece
    return out


class CitusUnavailable(Exception):
    """The database cannot distribute tables; the message says what to do next."""


def check_citus(conn: psycopg.Connection) -> str:
    """The installed Citus version; raises CitusUnavailable naming the next step otherwise."""
    row = conn.execute(SQL.citus_installed).fetchone()
    if row is not None:
        return str(row[0])
    available = conn.execute(SQL.citus_available).fetchone()
    if available is not None:
        raise CitusUnavailable(
            "the citus extension is available but not created in this database: add citus to "
            "shared_preload_libraries (and restart) on every node, run CREATE EXTENSION citus "
            f"here and on the workers, then run `rtmh migrate --distribute` again; see {DOC}"
        )
    raise CitusUnavailable(
        "the citus extension is not installed in this database: install Citus on every node, "
        "add it to shared_preload_libraries, run CREATE EXTENSION citus, then run "
        f"`rtmh migrate --distribute` again; see {DOC}"
    )


def _done(conn: psycopg.Connection, step: Step) -> bool:
    if step.done_when == "table":
        return conn.execute(SQL.citus_table_distributed, (step.target,)).fetchone() is not None
    if step.done_when == "function":
        return conn.execute(SQL.citus_function_distributed, (step.target,)).fetchone() is not None
    return False


def distribute(
    conn: psycopg.Connection,
    tables: Mapping[str, Placement] = TABLES,
    progress: Callable[[str, bool], None] | None = None,
) -> int:
    """Run ``plan(tables)`` on an autocommit connection, each call in its own transaction,
    skipping tables and functions Citus already has (a second run changes nothing). Calls
    ``progress(rendered call, ran)`` for each; returns how many ran. Raises CitusUnavailable
    before touching anything when Citus is missing, and when a call fails (the calls before it
    stay done; run again once fixed)."""
    check_citus(conn)
    in_metadata = needs_coordinator_in_metadata(tables)
    if in_metadata and conn.execute(SQL.citus_coordinator_in_metadata).fetchone() is None:
        raise CitusUnavailable(
            "local tables with foreign keys to reference tables need the coordinator in "
            "Citus's metadata: run SELECT citus_set_coordinator_host('<this host>', <port>) "
            f"first; see {DOC}"
        )
    ran = 0
    for step in plan(tables):
        call = render(step)
        if _done(conn, step):
            if progress is not None:
                progress(call, False)
            continue
        try:
            conn.execute(getattr(SQL, step.query), step.params)
        except psycopg.Error as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CitusUnavailable(f"{call} failed: {first}") from err
        ran += 1
        if progress is not None:
            progress(call, True)
    return ran
