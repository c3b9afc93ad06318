"""`rtmh config apply` and `export` against the database: a declarative sync in one transaction.

Role: compare what the files declare (:class:`rtmh.service.config_file.Config`, already
checked) with the rows, and make the rows say the same: create what is missing, change what
differs (field by field), leave the rest, and with ``prune`` remove what a file once declared and
no file declares any more. Rows made by hand (``managed_by`` NULL) are never removed; a declared
name that matches a hand-made row adopts it. Everything happens in one transaction under an
advisory lock, so a failure (or ``dry_run``) changes nothing and two applies never interleave.

Writes reuse the queries of the API's service modules (rule_admin.sql, channels.sql), so a row
written here is the row the API would write. Export turns the rows back into a file that apply
accepts and that applies as "no change" to the same database.

A little over 500 lines because apply, prune and export share one set of row comparisons
(:func:`_stored_rule`, :func:`_field_changes`): apart, the round trip could drift.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
import psycopg
import yaml
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rtmh.db.queries import load
from rtmh.notify.channels import ChannelConfigError
from rtmh.notify.channels.config import parse_channel
from rtmh.notify.outbound import check_channel
from rtmh.notify.targets import TargetPolicy
from rtmh.rules.model import Rule, RuleError, validate_rule
from rtmh.service.config_file import (
    Config,
    DeclaredChannel,
    DeclaredSilence,
    resolve_secrets,
    silence_period,
)
from rtmh.service.errors import Conflict, Invalid

SQL = load("config_sync")
RULES_SQL = load("rule_admin")
CHANNELS_SQL = load("channels")

Kind = Literal["channel", "rule", "silence"]
Action = Literal["create", "change", "unchanged", "remove"]
#: what a diff shows for a secret: never its value
SECRET: Final = "(secret)"
_ROW_ONLY: Final = frozenset({"id", "created_at", "updated_at", "managed_by"})


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(slots=True)
class Change:
    kind: Kind
    name: str
    action: Action
    fields: list[FieldChange] = field(default_factory=list)
    #: the file that declares it now (None for a removal)
    managed_by: str | None = None
    #: bookkeeping that is not a change of the object: "adopted (was made by hand)", ...
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "fields": [
                {"field": f.field, "old": _plain(f.old), "new": _plain(f.new)} for f in self.fields
            ],
            "managed_by": self.managed_by,
            "note": self.note,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(slots=True)
class Diff:
    changes: list[Change] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    def summary(self) -> str:
        if not self.changed:
            return f"no change ({self.count('unchanged')} unchanged)"
        parts = [f"{self.count(a)} {w}" for a, w in _WORDS if self.count(a)]
        return ", ".join(parts)


_WORDS: Final[tuple[tuple[Action, str], ...]] = (
    ("create", "created"),
    ("change", "changed"),
    ("remove", "removed"),
    ("unchanged", "unchanged"),
)


class _DryRun(Exception):
    """Raised inside the transaction to roll it back after the diff was computed."""


# ------------------------------------------------------------------------------------------------
# Comparing
# ------------------------------------------------------------------------------------------------


def _rule_fields(rule: Rule) -> dict[str, Any]:
    fields = msgspec.structs.asdict(rule)
    fields.pop("id")
    return fields


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    return [
        FieldChange(k, old.get(k), new.get(k))
        for k in new
        if not _same(_plain(old.get(k)), _plain(new.get(k)))
    ]


def _secret_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """Which secrets differ, by name only: values never reach the output."""
    changes: list[FieldChange] = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            changes.append(
                FieldChange(
                    f"secrets.{key}",
                    SECRET if key in old else None,
                    SECRET if key in new else None,
                )
            )
    return changes


def _stored_rule(row: Mapping[str, Any]) -> Rule | None:
    try:
        return validate_rule({k: v for k, v in row.items() if k not in _ROW_ONLY})
    except RuleError:
        return None  # stored before a stricter check: every field shows as changed


# ------------------------------------------------------------------------------------------------
# Apply
# ------------------------------------------------------------------------------------------------


async def _check_target(channel: DeclaredChannel, secrets: Any, policy: TargetPolicy) -> None:
    """The API's SSRF guard (check_channel) with the real secrets (Slack's URL is one); Invalid
    naming the file, line and field. Resolves host names: in a worker thread."""
    try:
        parsed = parse_channel(channel.name, channel.type, channel.config, secrets)
        await asyncio.to_thread(check_channel, parsed, policy)
    except ChannelConfigError as err:
        raise Invalid(f"{channel.mark}: {channel.where}.{err.field}", err.problem) from None


async def apply_config(
    conn: psycopg.AsyncConnection[Any],
    config: Config,
    env: Mapping[str, str],
    policy: TargetPolicy,
    *,
    prune: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Diff:
    """Make the database hold what ``config`` declares; the diff of what changed (or, with
    ``dry_run``, would change). Raises a ServiceError and changes nothing on a refusal."""
    diff = Diff()
    now = now or datetime.now(UTC)
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SQL.lock_config)
            await _channels(cur, config.channels, env, policy, diff)
            await _rules(cur, config, diff)
            await _silences(cur, config.silences, diff, now)
            if prune:
                await _prune(cur, config, diff)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    order = {"channel": 0, "rule": 1, "silence": 2}
    diff.changes.sort(key=lambda c: (order[c.kind], c.name))
    return diff


def _note(old: str | None, new: str) -> str | None:
    if old is None:
        return "adopted: was made by hand, now managed by the file"
    if old != new:
        return f"now managed by {new}, was {old}"
    return None


async def _channels(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    channels: Sequence[DeclaredChannel],
    env: Mapping[str, str],
    policy: TargetPolicy,
    diff: Diff,
) -> None:
    """Upsert the declared channels. Only those created or changed go through the target
    check, as an API write would: an unchanged row was checked when it was saved, and a
    round trip must not fail because a disabled sample channel's host does not resolve here."""
    await cur.execute(SQL.all_channels)
    rows = {r["name"]: r for r in await cur.fetchall()}
    for channel in channels:
        secrets = resolve_secrets(channel, env)
        wanted = {"type": channel.type, "config": channel.config, "enabled": channel.enabled}
        row = rows.get(channel.name)
        params = (
            Jsonb(channel.config),
            Jsonb(secrets),
            channel.enabled,
        )
        if row is None:
            await _check_target(channel, secrets, policy)
            await cur.execute(CHANNELS_SQL.insert_channel, (channel.name, channel.type, *params))
            diff.changes.append(Change("channel", channel.name, "create", [], channel.file))
        else:
            changes = _field_changes(row, wanted) + _secret_changes(row["secrets"] or {}, secrets)
            if changes:
                await _check_target(channel, secrets, policy)
                await cur.execute(
                    CHANNELS_SQL.update_channel, (channel.type, *params, channel.name)
                )
            action: Action = "change" if changes else "unchanged"
            diff.changes.append(
                Change(
                    "channel",
                    channel.name,
                    action,
                    changes,
                    channel.file,
                    _note(row["managed_by"], channel.file),
                )
            )
        await cur.execute(SQL.set_channel_managed_by, (channel.file, channel.name, channel.file))


async def _rules(cur: psycopg.AsyncCursor[dict[str, Any]], config: Config, diff: Diff) -> None:
    await cur.execute(SQL.all_rules)
    rows = {r["name"]: r for r in await cur.fetchall()}
    for declared in config.rules:
        rule = declared.rule
        params = {**_rule_fields(rule), "channels": list(rule.channels)}
        row = rows.get(rule.name)
        if row is None:
            await cur.execute(RULES_SQL.insert_rule, params)
            created = await cur.fetchone()
            assert created is not None
            rule_id = created["id"]
            diff.changes.append(Change("rule", rule.name, "create", [], declared.file))
        else:
            rule_id = row["id"]
            stored = _stored_rule(row)
            old = _rule_fields(stored) if stored else {}
            changes = _field_changes(old, _rule_fields(rule))
            if changes:
                await cur.execute(RULES_SQL.update_rule, {**params, "id": rule_id})
            diff.changes.append(
                Change(
                    "rule",
                    rule.name,
                    "change" if changes else "unchanged",
                    changes,
                    declared.file,
                    _note(row["managed_by"], declared.file),
                )
            )
        await cur.execute(SQL.set_rule_managed_by, (declared.file, rule_id, declared.file))


def _silence_fields(matchers: Any, start: datetime, end: datetime, comment: str) -> dict[str, Any]:
    return {"matchers": dict(matchers), "starts_at": start, "ends_at": end, "comment": comment}


async def _silences(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    silences: Sequence[DeclaredSilence],
    diff: Diff,
    now: datetime,
) -> None:
    await cur.execute(SQL.named_silences)
    rows = {r["name"]: r for r in await cur.fetchall()}
    for silence in silences:
        row = rows.get(silence.name)
        start, end = silence_period(silence, row["starts_at"] if row else None, now)
        wanted = _silence_fields(silence.matchers, start, end, silence.comment)
        if row is None:
            if end <= now:
                continue  # ended before it was ever applied: check warns, nothing to store
            await cur.execute(
                SQL.insert_named_silence,
                {
                    **wanted,
                    "matchers": Jsonb(silence.matchers),
                    "name": silence.name,
                    "managed_by": silence.file,
                    "created_by": f"config:{silence.file}",
                },
            )
            diff.changes.append(Change("silence", silence.name, "create", [], silence.file))
            continue
        old = _silence_fields(row["matchers"], row["starts_at"], row["ends_at"], row["comment"])
        changes = _field_changes(old, wanted)
        note = _note(row["managed_by"], silence.file)
        if changes and row["ends_at"] <= now:
            # One name is one silence for ever (008): an ended one (e.g. expired early by the
            # on-call engineer) is not brought back by a later apply.
            changes = []
            note = (
                f"ended at {row['ends_at'].isoformat()}; not brought back: remove it from the "
                "file, or declare a new silence under a new name"
            )
        if changes:
            await cur.execute(
                SQL.update_named_silence,
                {
                    **wanted,
                    "matchers": Jsonb(silence.matchers),
                    "id": row["id"],
                    "managed_by": silence.file,
                },
            )
        diff.changes.append(
            Change(
                "silence",
                silence.name,
                "change" if changes else "unchanged",
                changes,
                silence.file,
                note,
            )
        )
        await cur.execute(SQL.set_silence_managed_by, (silence.file, row["id"], silence.file))


async def _prune(cur: psycopg.AsyncCursor[dict[str, Any]], config: Config, diff: Diff) -> None:
    """Remove what a file declared once and none declares now; rules first (they name
    channels), and a channel a hand-made rule still uses is refused, not orphaned."""
    rule_names = {r.rule.name for r in config.rules}
    await cur.execute(SQL.all_rules)
    for row in await cur.fetchall():
        if row["managed_by"] is not None and row["name"] not in rule_names:
            await cur.execute(RULES_SQL.delete_rule, (row["id"],))
            diff.changes.append(Change("rule", row["name"], "remove", note=row["managed_by"]))
    channel_names = {c.name for c in config.channels}
    await cur.execute(SQL.all_channels)
    for row in await cur.fetchall():
        if row["managed_by"] is None or row["name"] in channel_names:
            continue
        await cur.execute(CHANNELS_SQL.rules_using_channel, (row["name"],))
        users = [r["name"] for r in await cur.fetchall()]
        if users:
            raise Conflict(
                f"channel {row['name']!r} is no longer declared but rule(s) {', '.join(users)} "
                "made by hand still use it; remove it from them or declare the channel"
            )
        await cur.execute(CHANNELS_SQL.delete_channel, (row["name"],))
        diff.changes.append(Change("channel", row["name"], "remove", note=row["managed_by"]))
    silence_names = {s.name for s in config.silences}
    await cur.execute(SQL.named_silences)
    for row in await cur.fetchall():
        if row["managed_by"] is None or row["name"] in silence_names:
            continue
        await cur.execute(SQL.end_named_silence, (row["id"],))
        if cur.rowcount:
            diff.changes.append(Change("silence", row["name"], "remove", note=row["managed_by"]))


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------

_ENV_PART: Final = re.compile(r"[^A-Za-z0-9]+")
#: fields a rule always shows, default or not: what a reader needs to understand it
_RULE_ALWAYS: Final = ("name", "metric_type", "condition", "threshold")


def secret_variable(channel: str, *keys: str) -> str:
    """The environment variable export names for one secret: RTMH_SECRET_<CHANNEL>_<KEY>."""
    parts = [channel, *keys]
    return "RTMH_SECRET_" + "_".join(_ENV_PART.sub("_", p).strip("_").upper() for p in parts)


@dataclass(slots=True)
class Exported:
    text: str
    #: environment variables apply will need, with what they hold
    variables: list[tuple[str, str]]


async def export_config(conn: psycopg.AsyncConnection[Any]) -> Exported:
    """Today's rules, channels and live declared silences as a config file."""
    defaults = _rule_fields(
        validate_rule({"name": "x", "metric_type": "x", "condition": ">", "threshold": 0})
    )
    variables: list[tuple[str, str]] = []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.all_channels)
        channel_rows = await cur.fetchall()
        await cur.execute(SQL.all_rules)
        rule_rows = await cur.fetchall()
        await cur.execute(SQL.live_named_silences)
        silence_rows = await cur.fetchall()
    channels: list[dict[str, Any]] = []
    for row in channel_rows:
        item: dict[str, Any] = {"name": row["name"], "type": row["type"]}
        if row["config"]:
            item["config"] = row["config"]
        secrets: dict[str, Any] = {}
        for key, value in sorted((row["secrets"] or {}).items()):
            if isinstance(value, dict):
                secrets[key] = {}
                for sub in sorted(value):
                    var = secret_variable(row["name"], key, sub)
                    secrets[key][sub] = f"${{{var}}}"
                    variables.append((var, f"channel {row['name']} secrets.{key}.{sub}"))
            else:
                var = secret_variable(row["name"], key)
                secrets[key] = f"${{{var}}}"
                variables.append((var, f"channel {row['name']} secrets.{key}"))
        if secrets:
            item["secrets"] = secrets
        if not row["enabled"]:
            item["enabled"] = False
        channels.append(item)
    rules: list[dict[str, Any]] = []
    for row in rule_rows:
        stored = _stored_rule(row)
        if stored is None:
            continue  # the engine ignores it too; apply would refuse it
        fields = _rule_fields(stored)
        rules.append(
            {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in fields.items()
                if k in _RULE_ALWAYS or not _same(v, defaults[k])
            }
        )
    silences = [
        {
            "name": row["name"],
            "matchers": row["matchers"],
            "starts_at": row["starts_at"].astimezone(UTC),
            "ends_at": row["ends_at"].astimezone(UTC),
            **({"comment": row["comment"]} if row["comment"] else {}),
        }
        for row in silence_rows
    ]
    document = {"channels": channels, "rules": rules, "silences": silences}
    header = (
        "# RTMH config, exported by `rtmh config export`. Apply it with `rtmh config apply`;\n"
        "# secrets are ${VAR} references: set those variables first.\n"
    )
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return Exported(header + body, variables)


# ------------------------------------------------------------------------------------------------
# Check with a database
# ------------------------------------------------------------------------------------------------


async def seen_series(conn: psycopg.AsyncConnection[Any]) -> set[tuple[str, str]]:
    """(window_key, metric_type) pairs with windows in the last day."""
    async with conn.transaction(), conn.cursor() as cur:
        # a check must not hang on a huge metrics_agg: 10 s, then the caller skips the warning
        await cur.execute("SET LOCAL statement_timeout = '10s'")
        await cur.execute(SQL.seen_series)
        return {(str(k), str(t)) for k, t in await cur.fetchall()}
