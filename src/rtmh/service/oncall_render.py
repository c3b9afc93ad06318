"""How the on-call commands print: rich tables for people, the API's JSON for scripts.

The JSON goes through the API's own response models (:mod:`rtmh.api.schemas`), so
``rtmh incidents --json`` and ``GET /api/v1/incidents`` give the same fields with the same
types: a script can move from one to the other without a change. Nothing here reads the
database; :mod:`rtmh.service.oncall_cli` hands over what the service layer returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from pydantic import TypeAdapter
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rtmh.api.schemas import Incident, IncidentDetail, PageOf, SilenceOut
from rtmh.records import LIVE_STATUSES, value_vs_threshold
from rtmh.service.backtest import BacktestResult

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}
STATUS_STYLE = {
    "open": "bold red",
    "investigating": "yellow",
    "resolved": "green",
    "closed": "dim",
    "pending": "yellow",
    "active": "bold",
    "expired": "dim",
    "sent": "green",
    "suppressed": "dim",
    "failed": "red",
    "dead": "bold red",
}
#: the short form of an incident id in tables (any unique prefix is accepted back)
SHORT_ID = 8

_PAGE = TypeAdapter(PageOf[Incident])
_SILENCES = TypeAdapter(list[SilenceOut])


def print_json(out: Console, data: Any) -> None:
    # print() rather than rich's print_json: no highlighting, no wrapping, so `| jq` always works
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out.file, flush=True)


def page_json(items: list[dict[str, Any]], next_cursor: str | None) -> Any:
    page = _PAGE.validate_python({"items": items, "next_cursor": next_cursor})
    return _PAGE.dump_python(page, mode="json")


def detail_json(incident: Mapping[str, Any]) -> Any:
    return IncidentDetail.model_validate(incident).model_dump(mode="json")


def silence_json(silence: Mapping[str, Any]) -> Any:
    return SilenceOut.model_validate(silence).model_dump(mode="json")


def silences_json(silences: list[dict[str, Any]]) -> Any:
    return _SILENCES.dump_python(_SILENCES.validate_python(silences), mode="json")


def backtest_json(result: BacktestResult) -> Any:
    # the API answers with the same dataclasses, encoded the same way
    return msgspec.to_builtins(result)


# --- small formats ----------------------------------------------------------------------------
def styled(value: str | None, styles: Mapping[str, str] = STATUS_STYLE) -> str:
    if value is None:
        return "-"
    style = styles.get(value) or SEVERITY_STYLE.get(value)
    return f"[{style}]{escape(value)}[/]" if style else escape(value)


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return escape(value)
    else:
        moment = value
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def age(value: datetime, now: datetime | None = None) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``: how long ago, to the unit that matters."""
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _value(row: Mapping[str, Any], condition: str | None = None) -> str:
    return value_vs_threshold(
        number(row.get("last_value")),
        condition,
        None if row.get("threshold") is None else number(row["threshold"]),
        live=row.get("status") in LIVE_STATUSES,
    )


# --- incidents --------------------------------------------------------------------------------
def incidents_table(rows: Sequence[Mapping[str, Any]], next_cursor: str | None) -> Table:
    caption = None
    if next_cursor:
        caption = f"more: --cursor {next_cursor} (or narrow the filters / raise --limit)"
    table = Table(title=f"incidents ({len(rows)}, newest first)", caption=caption)
    for column in ("id", "severity", "status", "service", "rule", "value", "age", "assignee"):
        table.add_column(column, no_wrap=column in ("id", "age"))
    for row in rows:
        table.add_row(
            row["id"][:SHORT_ID],
            styled(row["severity"]),
            styled(row["status"]),
            escape(row.get("window_key") or "-"),
            escape(row.get("rule_name") or row.get("source") or "-"),
            escape(_value(row)),
            age(row["created_at"]),
            escape(row.get("assignee") or "-"),
        )
    return table


def incident_view(incident: Mapping[str, Any]) -> Group:
    """``rtmh incident show``: header, why it fired, context, timeline, notifications."""
    meta: Mapping[str, Any] = incident.get("metadata") or {}
    parts: list[Any] = [_header(incident, meta)]
    why = incident.get("why")
    if why:
        parts.append(_why(why, meta))
    if incident.get("recent_errors"):
        parts.append(_recent("recent errors", incident["recent_errors"], ("at", "host", "msg")))
    if incident.get("recent_changes"):
        parts.append(_recent("recent changes", incident["recent_changes"], ("at", "type")))
    parts.append(_timeline(incident.get("timeline") or []))
    sent = incident.get("notifications") or []
    # an empty table reads like a bug; say why there may be nothing
    parts.append(
        _notifications(sent) if sent else Text("notifications: none (the rule lists no channels)")
    )
    return Group(*parts)


def _header(incident: Mapping[str, Any], meta: Mapping[str, Any]) -> Panel:
    lines = [
        f"[bold]{escape(incident['title'])}[/]",
        f"id        {incident['id']}",
        f"status    {styled(incident['status'])}   severity {styled(incident['severity'])}"
        f"   triggered {incident['trigger_count']}x",
        f"service   {escape(incident.get('window_key') or '-')}"
        f"   rule {escape(incident.get('rule_name') or '-')}"
        f"   source {escape(incident['source'])}",
        f"value     {escape(_value(incident, meta.get('condition')))}"
        f"   peak {number(incident.get('peak_value'))}",
        f"opened    {when(incident['created_at'])} ({age(incident['created_at'])} ago)"
        f"   last seen {when(incident['last_seen'])}",
    ]
    if incident.get("resolved_at") or incident.get("closed_at"):
        lines.append(
            f"resolved  {when(incident.get('resolved_at'))}"
            f"   closed {when(incident.get('closed_at'))}"
        )
    lines.append(f"assignee  {escape(incident.get('assignee') or '-')}")
    if incident.get("description"):
        lines.append(escape(incident["description"]))
    if meta.get("runbook_url"):
        lines.append(f"runbook   {escape(str(meta['runbook_url']))}")
    return Panel("\n".join(lines), title="incident", title_align="left", expand=False)


def _why(why: Mapping[str, Any], meta: Mapping[str, Any]) -> Panel:
    lines = [
        f"value {number(why.get('value'))} against threshold {number(why.get('threshold'))}"
        + (f" ({escape(str(meta['condition']))})" if meta.get("condition") else "")
    ]
    if meta.get("metric_type"):
        lines.append(
            f"metric {escape(str(meta['metric_type']))}"
            f" ({escape(str(meta.get('aggregation') or 'value'))})"
        )
    window = why.get("window")
    if isinstance(window, Mapping):
        lines.append(
            f"window {when(window.get('start'))} .. {when(window.get('end'))}"
            f", {window.get('count', '?')} events"
        )
    if why.get("reason"):
        lines.append(escape(str(why["reason"])))
    return Panel("\n".join(lines), title="why it fired", title_align="left", expand=False)


def _recent(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (*columns, *(["payload"] if "type" in columns else [])):
        table.add_column(column, no_wrap=column == "at")
    for row in rows:
        cells = [
            when(row.get("at")) if c == "at" else escape(str(row.get(c) or "-")) for c in columns
        ]
        if "type" in columns:
            payload = row.get("payload")
            cells.append(escape(json.dumps(payload, default=str)) if payload else "-")
        table.add_row(*cells)
    return table


def _timeline(entries: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="timeline", title_justify="left")
    for column in ("at", "event", "status", "value", "actor", "details"):
        table.add_column(column, no_wrap=column == "at")
    for entry in entries:
        change = "-"
        if entry.get("from_status") or entry.get("to_status"):
            change = f"{entry.get('from_status') or '-'} -> {entry.get('to_status') or '-'}"
        # the actor has its own column
        details = {k: v for k, v in (entry.get("details") or {}).items() if k != "actor"}
        text = details.get("message") or details.get("comment")
        if text is None and details:
            text = json.dumps(details, default=str)
        table.add_row(
            when(entry["created_at"]),
            escape(entry["event_type"]),
            escape(change),
            number(entry.get("value")) if entry.get("value") is not None else "-",
            escape(entry["actor"]),
            escape(str(text)) if text else "-",
        )
    return table


def _notifications(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="notifications", title_justify="left")
    for column in ("id", "channel", "event", "status", "attempts", "outcome"):
        table.add_column(column)
    for row in rows:
        outcome = Text()
        if row.get("suppressed_by") is not None:
            outcome.append(f"muted by silence {row['suppressed_by']}")
        for attempt in row.get("attempt_results") or []:
            if outcome:
                outcome.append("\n")
            status = f" HTTP {attempt['http_status']}" if attempt.get("http_status") else ""
            error = f": {attempt['error']}" if attempt.get("error") else ""
            outcome.append(
                f"#{attempt['attempt']} {when(attempt['at'])} {attempt['outcome']}{status}{error}"
            )
        if not outcome and row.get("last_error"):
            outcome.append(str(row["last_error"]))
        table.add_row(
            str(row["id"]),
            escape(row["channel"]),
            escape(row["event"]),
            styled(row["status"]),
            f"{row['attempts']}/{row['max_attempts']}",
            outcome if outcome else Text("-"),
        )
    return table


# --- silences ---------------------------------------------------------------------------------
def matchers_text(matchers: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(matchers.items()))


def silences_table(rows: Sequence[Mapping[str, Any]], what: str) -> Table:
    table = Table(title=f"silences ({what}, latest ending first)")
    for column in ("id", "state", "matches", "starts", "ends", "by", "comment"):
        table.add_column(column, no_wrap=column in ("id", "starts", "ends"))
    for row in rows:
        table.add_row(
            str(row["id"]),
            styled(row["state"]),
            escape(matchers_text(row["matchers"])),
            when(row["starts_at"]),
            when(row["ends_at"]),
            escape(row["created_by"]),
            escape(row["comment"] or "-"),
        )
    return table


# --- backtest ---------------------------------------------------------------------------------
def backtest_view(result: BacktestResult) -> Group:
    s = result.summary
    table = Table(title=f"rule {s.rule!r}: would-be incidents")
    for column in ("service", "opened", "resolved", "peak", "opened at value", "reopens"):
        table.add_column(column, no_wrap=column in ("opened", "resolved"))
    for i in result.incidents:
        table.add_row(
            escape(i.window_key),
            when(i.opened_at),
            when(i.resolved_at) if i.resolved_at else "[bold red]still live[/]",
            number(i.peak_value),
            number(i.open_value),
            str(i.reopens),
        )
    summary = (
        f"{when(s.start)} .. {when(s.end)}: {s.incidents} incident(s), {s.live_at_end} live at "
        f"the end; {s.windows_evaluated:,} windows of {s.keys_matched} service(s) judged, "
        f"{s.windows_without_verdict:,} without a verdict (too few events)"
    )
    if not result.incidents:
        return Group(Text(f"rule {s.rule!r} would have opened no incidents"), Text(summary))
    return Group(table, Text(summary))
