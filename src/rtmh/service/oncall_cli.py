"""The on-call engineer's commands: `rtmh incidents`, `rtmh incident show|ack|resolve|close|
reopen|note|assign`, `rtmh silence add|list|expire` and `rtmh rules backtest`.

Everything goes through the service layer the API uses (rtmh.service.incidents, .silences,
.backtest), so the CLI accepts and refuses exactly what the API does. This module only wires
commands: rtmh.service.oncall_input turns flags into arguments (durations, times, ``key=glob``
matchers, rule files, id prefixes), rtmh.service.oncall_render prints what comes back. A
ServiceError is one line and exit 1; a flag that cannot be parsed is one line and exit 2.

The actor on the timeline (and a silence's ``created_by``) is ``cli:<name>``, ``<name>`` being
``--as`` or the OS user: the prefix tells a shell action from an API token of the same name
(tokens are named freely), since the CLI is not authenticated beyond database access.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer

from rtmh.console import make_console
from rtmh.rules.model import Rule
from rtmh.service import backtest, incidents, silences
from rtmh.service import oncall_render as render
from rtmh.service.cli import run_with_connection
from rtmh.service.errors import ServiceError
from rtmh.service.oncall_input import (
    actor,
    fail,
    parse_duration,
    parse_matchers,
    parse_moment,
    parse_time,
    rule_from_file,
    usage,
)

out = make_console()

incident_app = typer.Typer(
    help="One incident: show, ack, resolve, close, reopen, note, assign.", no_args_is_help=True
)
silence_app = typer.Typer(help="Mute notifications: add, list, expire.", no_args_is_help=True)
rules_app = typer.Typer(help="Alert rules: backtest.", no_args_is_help=True)

AsOption = Annotated[
    str | None,
    typer.Option("--as", help="who acts, on the timeline as cli:NAME [default: the OS user]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON")]
IdArgument = Annotated[str, typer.Argument(help="incident id or a unique prefix of it")]


# --- rtmh incidents ---------------------------------------------------------------------------
def incidents_command(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option(help="open, investigating, resolved, closed (repeatable)"),
    ] = None,
    severity: Annotated[
        list[str] | None, typer.Option(help="low, medium, high, critical (repeatable)")
    ] = None,
    service: Annotated[str | None, typer.Option(help="the service (window key)")] = None,
    rule: Annotated[str | None, typer.Option(help="the rule's name")] = None,
    since: Annotated[
        str | None, typer.Option(help="opened at or after: 2h (ago) or an ISO 8601 time")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="opened before: 30m (ago) or an ISO 8601 time")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many (1-500)")] = 50,
    cursor: Annotated[str | None, typer.Option(help="the next page (from the caption)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Incidents, newest first (every filter optional)."""
    now = datetime.now(UTC)
    filters = incidents.IncidentFilter(
        status=status or None,
        severity=severity or None,
        service=service,
        rule=rule,
        since=None if since is None else parse_moment("--since", since, now),
        until=None if until is None else parse_moment("--until", until, now),
    )
    page = run_with_connection(
        ctx, lambda c: incidents.list_incidents(c, filters, limit=limit, cursor=cursor)
    )
    if as_json:
        render.print_json(out, render.page_json(page.items, page.next_cursor))
        return
    out.print(render.incidents_table(page.items, page.next_cursor))


# --- rtmh incident ... ------------------------------------------------------------------------
@incident_app.command("show")
def show(ctx: typer.Context, incident_id: IdArgument, as_json: JsonOption = False) -> None:
    """Everything about one incident: why it fired, context, timeline, notifications."""

    async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        return await incidents.get_incident(
            conn, await incidents.resolve_incident(conn, incident_id)
        )

    incident = run_with_connection(ctx, work)
    if as_json:
        render.print_json(out, render.detail_json(incident))
        return
    out.print(render.incident_view(incident))


def _act(
    ctx: typer.Context, ref: str, action: str, who: str | None, message: str | None, as_json: bool
) -> None:
    name = actor(who)

    async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[str, dict[str, Any]]:
        key = await incidents.resolve_incident(conn, ref)
        before = await incidents.get_incident(conn, key)
        after = await incidents.change_status(conn, key, action, name, message)
        return before["status"], after

    before, incident = run_with_connection(ctx, work)
    if as_json:
        render.print_json(out, render.detail_json(incident))
        return
    change = (
        f"{before} -> {incident['status']}" if before != incident["status"] else f"already {before}"
    )
    out.print(
        f"incident {incident['id'][: render.SHORT_ID]} ({incident['title']}): {change}",
        highlight=False,
    )


MessageOption = Annotated[
    str | None, typer.Option("--message", "-m", help="a comment for the timeline")
]


def _status_command(name: str, action: str, doc: str) -> None:
    """One `rtmh incident NAME ID [-m ...]` command: the workflow change ``action``."""

    def command(
        ctx: typer.Context,
        incident_id: IdArgument,
        message: MessageOption = None,
        who: AsOption = None,
        as_json: JsonOption = False,
    ) -> None:
        _act(ctx, incident_id, action, who, message, as_json)

    command.__doc__ = doc
    command.__name__ = name
    incident_app.command(name)(command)


for _name, _action, _doc in (
    ("ack", "acknowledge", "Take it: open -> investigating (receivers get an update)."),
    ("resolve", "resolve", "Mark it resolved (it may reopen if the condition returns)."),
    ("close", "close", "Close it for good (a returning condition opens a new incident)."),
    ("reopen", "reopen", "Reopen a resolved incident."),
):
    _status_command(_name, _action, _doc)


@incident_app.command("note")
def note(
    ctx: typer.Context,
    incident_id: IdArgument,
    message: Annotated[str, typer.Option("--message", "-m", help="the note")],
    who: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a note to the timeline."""
    name = actor(who)

    async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        return await incidents.add_note(
            conn, await incidents.resolve_incident(conn, incident_id), name, message
        )

    incident = run_with_connection(ctx, work)
    if as_json:
        render.print_json(out, render.detail_json(incident))
        return
    out.print(f"note added to incident {incident['id'][: render.SHORT_ID]}", highlight=False)


@incident_app.command("assign")
def assign(
    ctx: typer.Context,
    incident_id: IdArgument,
    to: Annotated[str, typer.Option("--to", help="who takes it ('' to unassign)")],
    who: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give the incident to someone."""
    name = actor(who)

    async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        return await incidents.assign(
            conn, await incidents.resolve_incident(conn, incident_id), name, to
        )

    incident = run_with_connection(ctx, work)
    if as_json:
        render.print_json(out, render.detail_json(incident))
        return
    whom = incident["assignee"] or "nobody"
    out.print(f"incident {incident['id'][: render.SHORT_ID]} assigned to {whom}", highlight=False)


# --- rtmh silence ... -------------------------------------------------------------------------
@silence_app.command("add")
def silence_add(
    ctx: typer.Context,
    match: Annotated[
        list[str],
        typer.Option(help="key=glob on rule, service or severity (repeatable; all must match)"),
    ],
    comment: Annotated[str, typer.Option(help="why: shown to whoever wonders later")],
    for_: Annotated[str | None, typer.Option("--for", help="how long: 90s, 15m, 2h, 1d")] = None,
    until: Annotated[str | None, typer.Option(help="or until: an ISO 8601 time")] = None,
    starts: Annotated[str | None, typer.Option(help="start later: an ISO 8601 time")] = None,
    who: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mute matching notifications for a while."""
    if (for_ is None) == (until is None):
        raise usage("give either --for (e.g. 2h) or --until (an ISO 8601 time)")
    matchers = parse_matchers(match)
    duration = None if for_ is None else parse_duration("--for", for_).total_seconds()
    ends_at = None if until is None else parse_time("--until", until)
    starts_at = None if starts is None else parse_time("--starts", starts)
    created_by = actor(who)
    row = run_with_connection(
        ctx,
        lambda c: silences.create_silence(
            c,
            matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            duration_seconds=duration,
            comment=comment,
            created_by=created_by,
        ),
    )
    if as_json:
        render.print_json(out, render.silence_json(row))
        return
    out.print(
        f"silence {row['id']} ({row['state']}) mutes {render.matchers_text(row['matchers'])} "
        f"until {render.when(row['ends_at'])}",
        highlight=False,
    )


@silence_app.command("list")
def silence_list(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="every silence")] = False,
    expired: Annotated[bool, typer.Option("--expired", help="only expired ones")] = False,
    pending: Annotated[bool, typer.Option("--pending", help="only those starting later")] = False,
    limit: Annotated[int, typer.Option(help="at most this many")] = 200,
    as_json: JsonOption = False,
) -> None:
    """Silences: the active ones unless told otherwise."""
    if show_all + expired + pending > 1:
        raise usage("give at most one of --all, --expired, --pending")
    state: silences.State | None = "expired" if expired else "pending" if pending else "active"
    if show_all:
        state = None
    if not 1 <= limit <= 10_000:
        raise usage(f"--limit: between 1 and 10000, got {limit}")
    rows = run_with_connection(ctx, lambda c: silences.list_silences(c, state, limit))
    if as_json:
        render.print_json(out, render.silences_json(rows))
        return
    out.print(render.silences_table(rows, state or "all"))


@silence_app.command("expire")
def silence_expire(
    ctx: typer.Context,
    silence_id: Annotated[int, typer.Argument(help="the silence's id (`rtmh silence list`)")],
    as_json: JsonOption = False,
) -> None:
    """End a silence now (notifications from then on go out)."""
    row = run_with_connection(ctx, lambda c: silences.expire_silence(c, silence_id))
    if as_json:
        render.print_json(out, render.silence_json(row))
        return
    out.print(f"silence {row['id']} expired at {render.when(row['ends_at'])}", highlight=False)


# --- rtmh rules backtest ----------------------------------------------------------------------
@rules_app.command("backtest")
def backtest_command(
    ctx: typer.Context,
    rule_ref: Annotated[
        str, typer.Argument(metavar="FILE|NAME", help="a YAML/JSON rule file, or a saved rule")
    ],
    since: Annotated[str, typer.Option(help="from: 24h (ago) or an ISO 8601 time")] = "24h",
    until: Annotated[
        str | None, typer.Option(help="to: 1h (ago) or an ISO 8601 time [default: now]")
    ] = None,
    rule_name: Annotated[
        str | None, typer.Option("--rule", help="the rule to pick from a file of many")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """What a rule would have done on the stored windows (nothing is written)."""
    now = datetime.now(UTC)
    start = parse_moment("--since", since, now)
    end = now if until is None else parse_moment("--until", until, now)
    path = Path(rule_ref)
    looks_like_file = path.suffix.lower() in (".yaml", ".yml", ".json") or "/" in rule_ref
    unsaved: Rule | None = None
    if path.is_file():
        try:
            unsaved = rule_from_file(path, rule_name)
        except ServiceError as err:
            raise fail(f"{path}: {err.message}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise fail(f"cannot read {path}: {err}") from None
    elif looks_like_file:
        raise fail(f"no file {rule_ref} (and a saved rule's name has no '/' or extension)")
    elif rule_name is not None:
        raise usage("--rule picks a rule from a FILE; for a saved rule give its name alone")

    async def work(conn: psycopg.AsyncConnection[Any]) -> backtest.BacktestResult:
        rule = unsaved
        if rule is None:
            rule = await backtest.load_saved_rule(
                conn, int(rule_ref) if rule_ref.isdigit() else rule_ref
            )
        return await backtest.run_backtest(conn, rule, start, end, now=now)

    result = run_with_connection(ctx, work)
    if as_json:
        render.print_json(out, render.backtest_json(result))
        return
    out.print(render.backtest_view(result))


__all__ = [
    "incident_app",
    "incidents_command",
    "rules_app",
    "silence_app",
]
