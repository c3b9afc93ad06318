"""Incidents for people: the filtered list, one incident with everything about it, and the
actions of the on-call engineer (acknowledge, resolve, close, reopen, assign, note).

A status change goes through the same pure state machine as the rules engine
(:func:`rtmh.rules.lifecycle.apply_manual`) and writes with the rules stage's own statements, in
one transaction under the incident's row lock: the timeline row names the token, and the
notifications it queues are the engine's (same idempotency keys, same silences).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.records import INCIDENT_STATUSES, SEVERITIES
from rtmh.rules import notifications, store
from rtmh.rules.lifecycle import Notify, TransitionError, apply_manual
from rtmh.rules.model import IncidentState, Rule, RuleError, validate_rule
from rtmh.rules.silences import Silence
from rtmh.service.errors import Conflict, Invalid, NotFound, ServiceError
from rtmh.service.paging import Page, bad_cursor, check_limit, decode_cursor, page_of

SQL = load("incidents")
RULES_SQL = load("rules")
RULE_ADMIN_SQL = load("rule_admin")

#: action name -> the status it moves to
ACTIONS: Final = {
    "acknowledge": "investigating",
    "resolve": "resolved",
    "close": "closed",
    "reopen": "open",
}
_MAX_NOTE: Final = 4000
#: a whole id or the start of one, as `rtmh incidents` shows them
_PREFIX: Final = re.compile(r"^[0-9a-fA-F-]{1,36}$")
# bookkeeping of the rules engine inside incidents.metadata: not for people
_INTERNAL_METADATA: Final = frozenset({"eval"})


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    status: list[str] | None = None
    severity: list[str] | None = None
    service: str | None = None
    rule: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> IncidentFilter:
        for name, values, allowed in (
            ("status", self.status, INCIDENT_STATUSES),
            ("severity", self.severity, SEVERITIES),
        ):
            for value in values or ():
                if value not in allowed:
                    raise Invalid(name, f"unknown value {value!r}; use {', '.join(allowed)}")
        if self.since and self.until and self.since >= self.until:
            raise Invalid("until", "must be after since")
        return self


def parse_id(incident_id: str) -> str:
    try:
        return str(uuid.UUID(incident_id))
    except ValueError:
        raise NotFound(f"no incident {incident_id!r}: incident ids are UUIDs") from None


async def resolve_incident(conn: psycopg.AsyncConnection[Any], ref: str) -> str:
    """The full id of the incident ``ref`` names: a whole UUID, or a unique prefix of one."""
    text = ref.strip().lower()
    if not _PREFIX.match(text):
        raise NotFound(f"no incident {ref!r}: give its id or the start of it (`rtmh incidents`)")
    digits = text.replace("-", "")
    if len(digits) == 32:
        return parse_id(digits)
    low, high = digits.ljust(32, "0"), digits.ljust(32, "f")
    cur = await conn.execute(SQL.incident_ids_by_prefix, (low, high))
    found = [str(row[0]) for row in await cur.fetchall()]
    if not found:
        raise NotFound(f"no incident with an id starting {ref!r}; `rtmh incidents` lists them")
    if len(found) > 1:
        shown = ", ".join(i[: len(text) + 4] for i in found[:5])
        raise ServiceError(
            f"{ref!r} is ambiguous: {len(found) if len(found) < 6 else 'more than 5'} incidents "
            f"start with it ({shown}...); give more characters of the id"
        )
    return found[0]


async def list_incidents(
    conn: psycopg.AsyncConnection[Any],
    filters: IncidentFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    filters.check()
    check_limit(limit)
    after = decode_cursor(cursor, 2)
    params = {
        "status": filters.status or None,
        "severity": filters.severity or None,
        "service": filters.service,
        "rule": filters.rule,
        "source": filters.source,
        "since": filters.since,
        "until": filters.until,
        "after_created": None,
        "after_id": None,
        "limit": limit + 1,
    }
    if after is not None:
        try:
            params["after_created"] = datetime.fromisoformat(str(after[0]))
            params["after_id"] = str(uuid.UUID(str(after[1])))
        except ValueError:
            raise bad_cursor() from None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_incidents, params)
        rows = await cur.fetchall()
    return page_of(rows, limit, lambda row: [row["created_at"].isoformat(), row["id"]])


async def get_incident(conn: psycopg.AsyncConnection[Any], incident_id: str) -> dict[str, Any]:
    """The incident, why it fired, its timeline and its notifications with every attempt."""
    key = parse_id(incident_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.get_incident, (key,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        await cur.execute(SQL.timeline, (key,))
        timeline = await cur.fetchall()
        await cur.execute(SQL.notifications, (key,))
        sent = await cur.fetchall()
        await cur.execute(SQL.attempts, ([n["id"] for n in sent],))
        attempts = await cur.fetchall()
    by_notification: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_notification.setdefault(attempt.pop("notification_id"), []).append(attempt)
    for notification in sent:
        notification["attempt_results"] = by_notification.get(notification["id"], [])
    metadata = {k: v for k, v in (row.pop("metadata") or {}).items() if k not in _INTERNAL_METADATA}
    row["why"] = metadata.get("trigger")
    row["recent_errors"] = metadata.get("recent_errors", [])
    row["recent_changes"] = metadata.get("recent_changes", [])
    row["metadata"] = metadata
    row["timeline"] = timeline
    row["notifications"] = sent
    return row


def _rule(row: dict[str, Any] | None) -> Rule | None:
    if row is None:
        return None
    try:
        return validate_rule(row)
    except RuleError:
        return None  # a broken rule notifies nobody; the engine logs it


async def change_status(
    conn: psycopg.AsyncConnection[Any],
    incident_id: str,
    action: str,
    actor: str,
    comment: str | None = None,
) -> dict[str, Any]:
    """Apply one of :data:`ACTIONS`. Conflict when the workflow does not allow it."""
    target = ACTIONS[action]
    key = parse_id(incident_id)
    note = _check_note(comment, required=False)
    now = datetime.now(UTC)
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SQL.lock_incident, (key,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no incident {incident_id}")
            state = store.state_from_row(row)
            try:
                transition = apply_manual(state, target, now.timestamp(), actor=actor, comment=note)
            except TransitionError as err:
                raise Conflict(f"cannot {action} incident {key}: {err}") from None
            if transition.changed and transition.state is not None:
                new = transition.state
                await cur.execute(RULES_SQL.update_incident, store.update_params(new))
                for entry in transition.timeline:
                    await cur.execute(
                        RULES_SQL.insert_timeline,
                        store.timeline_params(
                            key,
                            entry.event_type,
                            entry.from_status,
                            entry.to_status,
                            entry.value,
                            entry.details,
                            entry.actor,
                        ),
                    )
                await _queue(cur, row, transition.notifications, new, actor, now)
    except psycopg.errors.CheckViolation as err:
        # the status trigger refused a change that raced with another one
        raise Conflict(f"cannot {action} incident {key}: {err.diag.message_primary}") from None
    return await get_incident(conn, key)


async def _queue(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    row: dict[str, Any],
    events: Sequence[Notify],
    state: IncidentState,
    actor: str,
    now: datetime,
) -> None:
    if not events or row["rule_id"] is None:
        return
    await cur.execute(RULE_ADMIN_SQL.get_rule_by_id, (row["rule_id"],))
    rule = _rule(await cur.fetchone())
    if rule is None or not rule.channels:
        return
    await cur.execute(RULES_SQL.active_silences)
    silences = [Silence.from_row(s) for s in await cur.fetchall()]
    for event in events:
        for queued in notifications.queue(
            rule, state, event.event, event.seq, f"{event.event} by {actor}", silences, now
        ):
            await cur.execute(
                RULES_SQL.insert_notification, store.notification_params(row["id"], queued)
            )


def _check_note(message: str | None, *, required: bool) -> str | None:
    if message is None or not message.strip():
        if required:
            raise Invalid("message", "must not be empty")
        return None
    if len(message) > _MAX_NOTE:
        raise Invalid("message", f"at most {_MAX_NOTE} characters, got {len(message)}")
    return message


async def add_note(
    conn: psycopg.AsyncConnection[Any], incident_id: str, actor: str, message: str
) -> dict[str, Any]:
    key = parse_id(incident_id)
    text = _check_note(message, required=True)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.lock_incident, (key,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        await cur.execute(
            RULES_SQL.insert_timeline,
            store.timeline_params(key, "comment", None, None, None, {"message": text}, actor),
        )
    return await get_incident(conn, key)


async def assign(
    conn: psycopg.AsyncConnection[Any], incident_id: str, actor: str, assignee: str | None
) -> dict[str, Any]:
    """Give the incident to someone (None: to nobody); the timeline says who did it."""
    key = parse_id(incident_id)
    who = None if assignee is None or not assignee.strip() else assignee.strip()
    if who is not None and len(who) > 200:
        raise Invalid("assignee", f"at most 200 characters, got {len(who)}")
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.lock_incident, (key,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        if row["assignee"] != who:
            await cur.execute(SQL.set_assignee, (who, key))
            details = {"assignee": who, "previous": row["assignee"]}
            await cur.execute(
                RULES_SQL.insert_timeline,
                store.timeline_params(key, "assigned", None, None, None, details, actor),
            )
    return await get_incident(conn, key)
