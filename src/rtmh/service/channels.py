"""Notification channels for people: list, read, create, update, delete, and a test send.

A channel is checked twice before it is stored: its settings by the notifier's own parser
(:func:`rtmh.notify.channels.config.parse_channel`, unknown keys refused) and every URL it sends
to against the target policy (:func:`rtmh.notify.outbound.check_channel`: no loopback, private
or metadata addresses unless RTMH_ALLOWED_TARGETS allows them). Secrets are write-only: an
answer says which are set, never what they are; an update keeps the secrets it does not name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rtmh.db.queries import load
from rtmh.notify.channels import Channel, ChannelConfigError, DeliveryResult
from rtmh.notify.channels.config import parse_channel, redact
from rtmh.notify.outbound import check_channel, send_test
from rtmh.notify.targets import TargetPolicy
from rtmh.service.errors import Conflict, Invalid, NotFound

SQL = load("channels")

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SET: Final = "set"


def shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """A channel as the API answers: config with credential-looking parts masked, and for each
    secret only that it is set."""
    try:
        view = redact(Channel.from_row(row))
        config, secrets = view["config"], dict.fromkeys(view["secrets"], SET)
    except ChannelConfigError:
        # stored before a stricter check: show it (masked) so it can be fixed, never its secrets
        config, secrets = {}, dict.fromkeys(row.get("secrets") or {}, SET)
    return {
        "name": row["name"],
        "type": row["type"],
        "config": config,
        "secrets": secrets,
        "enabled": row["enabled"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _invalid(err: ChannelConfigError) -> Invalid:
    return Invalid(err.field, err.problem)


async def _checked(
    name: str,
    type_: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    policy: TargetPolicy,
) -> Channel:
    if not _NAME.fullmatch(name):
        raise Invalid(
            "name", "use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    try:
        channel = parse_channel(name, type_, config, secrets)
        # resolves host names (a few seconds at most): off the event loop
        await asyncio.to_thread(check_channel, channel, policy)
    except ChannelConfigError as err:
        raise _invalid(err) from None
    return channel


async def list_channels(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_channels)
        return [shown(row) for row in await cur.fetchall()]


async def _row(
    cur: psycopg.AsyncCursor[dict[str, Any]], name: str, *, lock: bool = False
) -> dict[str, Any]:
    await cur.execute(SQL.get_channel_for_update if lock else SQL.get_channel, (name,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no channel {name!r}")
    return row


async def get_channel(conn: psycopg.AsyncConnection[Any], name: str) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        return shown(await _row(cur, name))


async def create_channel(
    conn: psycopg.AsyncConnection[Any],
    policy: TargetPolicy,
    *,
    name: str,
    type_: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    enabled: bool,
) -> dict[str, Any]:
    await _checked(name, type_, config, secrets, policy)
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                SQL.insert_channel,
                (name, type_, Jsonb(dict(config)), Jsonb(dict(secrets)), enabled),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            f"a channel named {name!r} exists; update it (PUT) or choose another name"
        ) from None
    assert row is not None
    return shown(row)


def merge_secrets(stored: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Secrets after an update: the given ones replace, a null removes, the rest are kept
    (nobody can read them back to send them again)."""
    merged = dict(stored)
    for key, value in (given or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


async def update_channel(
    conn: psycopg.AsyncConnection[Any],
    policy: TargetPolicy,
    name: str,
    *,
    type_: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any] | None,
    enabled: bool,
) -> dict[str, Any]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        current = await _row(cur, name, lock=True)
        merged = merge_secrets(current["secrets"] or {}, secrets)
        await _checked(name, type_, config, merged, policy)
        await cur.execute(
            SQL.update_channel, (type_, Jsonb(dict(config)), Jsonb(merged), enabled, name)
        )
        row = await cur.fetchone()
    assert row is not None
    return shown(row)


async def delete_channel(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    """Refused (Conflict) while a rule names it: the rule would page nobody without a word."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await _row(cur, name, lock=True)
        await cur.execute(SQL.rules_using_channel, (name,))
        users = [r["name"] for r in await cur.fetchall()]
        if users:
            raise Conflict(
                f"channel {name!r} is used by rule(s) {', '.join(users)}; remove it from them first"
            )
        await cur.execute(SQL.delete_channel, (name,))


async def test_channel(
    conn: psycopg.AsyncConnection[Any], policy: TargetPolicy, name: str, public_url: str
) -> DeliveryResult:
    """One test notification through the stored channel, now (no outbox row, no retry)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        row = await _row(cur, name)
    try:
        channel = Channel.from_row(row)
    except ChannelConfigError as err:
        raise _invalid(err) from None
    return await send_test(channel, policy, public_url=public_url)
