"""Alert rules for people: list, read, create, replace, patch, enable/disable, delete.

Validation is :func:`rtmh.rules.model.validate_rule`, the function the engine applies when it
loads rules: a rule the API accepts is a rule the engine runs. Writes fire the table's NOTIFY,
so every worker reloads within a moment.

A rule declared in a config file (``managed_by``, set by `rtmh config apply`) is refused to
every edit here unless forced: a change made beside the file would be undone by the next apply
without anyone having decided so. Forced, the edit is made and the next apply's diff shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.rules.model import Rule, RuleError, validate_rule
from rtmh.service.errors import Conflict, Invalid, NotFound

SQL = load("rule_admin")

#: what a client may send; id, created_at and updated_at are the server's
WRITABLE = tuple(f for f in Rule.__struct_fields__ if f != "id")
#: columns only the server (or `rtmh config apply`, for managed_by) writes
SERVER_FIELDS = ("id", "created_at", "updated_at", "managed_by")


def refuse_managed(row: Mapping[str, Any], force: bool) -> None:
    """Conflict when ``row`` is declared in a config file and the edit is not forced."""
    managed_by = row.get("managed_by")
    if managed_by and not force:
        raise Conflict(
            f"rule {row['name']!r} is managed by the config file {managed_by} "
            "(rtmh config apply); change it there and apply, or add ?force=true to edit it "
            "here anyway (the next apply puts the file's version back)"
        )


def check(fields: Mapping[str, Any]) -> Rule:
    """validate_rule for a request body: RuleError becomes Invalid naming the field."""
    for key in SERVER_FIELDS:
        if key in fields:
            raise Invalid(key, "set by the server; leave it out")
    try:
        return validate_rule(fields)
    except RuleError as err:
        raise Invalid(err.field, err.problem) from None


def _params(rule: Rule) -> dict[str, Any]:
    params = msgspec.structs.asdict(rule)
    params["channels"] = list(rule.channels)
    return params


async def _check_channels(cur: psycopg.AsyncCursor[dict[str, Any]], rule: Rule) -> None:
    if not rule.channels:
        return
    await cur.execute(SQL.existing_channels, (list(rule.channels),))
    known = {row["name"] for row in await cur.fetchall()}
    missing = [c for c in rule.channels if c not in known]
    if missing:
        raise Invalid(
            "channels",
            f"no channel named {missing[0]!r}; create it first (POST /api/v1/channels) or "
            "remove it from the rule",
        )


async def _fetch(cur: psycopg.AsyncCursor[dict[str, Any]], key: str) -> dict[str, Any]:
    if key.isdigit():
        await cur.execute(SQL.get_rule_by_id, (int(key),))
    else:
        await cur.execute(SQL.get_rule_by_name, (key,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no rule {key!r} (by id or name)")
    return row


async def list_rules(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_rules)
        return await cur.fetchall()


async def get_rule(conn: psycopg.AsyncConnection[Any], key: str) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        return await _fetch(cur, key)


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a rule named {name!r} exists; choose another name or update that rule")


async def create_rule(
    conn: psycopg.AsyncConnection[Any], fields: Mapping[str, Any]
) -> dict[str, Any]:
    rule = check(fields)
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await _check_channels(cur, rule)
            await cur.execute(SQL.insert_rule, _params(rule))
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise _duplicate(rule.name) from None
    assert row is not None
    return row


async def replace_rule(
    conn: psycopg.AsyncConnection[Any], key: str, fields: Mapping[str, Any], *, force: bool = False
) -> dict[str, Any]:
    """PUT: the body is the whole rule; fields left out take their defaults."""
    rule = check(fields)
    return await _store(conn, key, rule, force=force)


async def patch_rule(
    conn: psycopg.AsyncConnection[Any], key: str, fields: Mapping[str, Any], *, force: bool = False
) -> dict[str, Any]:
    """PATCH: the given fields over the stored rule, then the same validation."""
    current = await get_rule(conn, key)
    refuse_managed(current, force)
    merged = {k: v for k, v in current.items() if k in WRITABLE}
    for field in SERVER_FIELDS:
        if field in fields:
            raise Invalid(field, "set by the server; leave it out")
    merged.update(fields)
    return await _store(conn, str(current["id"]), check(merged), force=force)


async def _store(
    conn: psycopg.AsyncConnection[Any], key: str, rule: Rule, *, force: bool
) -> dict[str, Any]:
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            current = await _fetch(cur, key)
            refuse_managed(current, force)
            await _check_channels(cur, rule)
            await cur.execute(SQL.update_rule, {**_params(rule), "id": current["id"]})
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise _duplicate(rule.name) from None
    assert row is not None
    return row


async def set_enabled(
    conn: psycopg.AsyncConnection[Any], key: str, enabled: bool, *, force: bool = False
) -> dict[str, Any]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        current = await _fetch(cur, key)
        refuse_managed(current, force)
        await cur.execute(SQL.set_rule_enabled, (enabled, current["id"]))
        row = await cur.fetchone()
    assert row is not None
    return row


async def delete_rule(conn: psycopg.AsyncConnection[Any], key: str, *, force: bool = False) -> None:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        current = await _fetch(cur, key)
        refuse_managed(current, force)
        await cur.execute(SQL.delete_rule, (current["id"],))
