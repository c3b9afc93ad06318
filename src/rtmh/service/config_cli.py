"""`rtmh config check|apply|export|schema`: rules, channels and silences as YAML files.

The promtool / amtool analogues: ``check`` validates files without a database (with one, it
also warns about rules whose pattern or metric type matched nothing in the last day), ``apply``
syncs the database to the files in one transaction and prints the diff, ``export`` writes the
database's config as a file ``apply`` accepts, ``schema`` prints the file's JSON Schema.

Exit status: 0 ok (warnings allowed), 1 errors (nothing changed), 2 usage. Findings are one
line each on stderr, ``file:line:col: path: message``; what the command produced (the diff, the
export, the schema) is on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.markup import escape

from rtmh.config import Settings
from rtmh.console import make_console
from rtmh.db.connect import normalise_url
from rtmh.notify.targets import TargetPolicy
from rtmh.service.cli import _fail, run_with_connection
from rtmh.service.config_file import BUILTIN_METRIC_TYPES, Config, Problem, json_schema
from rtmh.service.config_file import load_config as load_files
from rtmh.service.config_sync import (
    SECRET,
    Change,
    Diff,
    apply_config,
    export_config,
    seen_series,
)

config_app = typer.Typer(
    help="Rules, channels and silences as YAML: check, apply (declarative sync), export, schema.",
    no_args_is_help=True,
)
console = make_console(stderr=True)
out = make_console()

Files = Annotated[
    list[Path],
    typer.Argument(
        exists=True, dir_okay=False, readable=True, help="YAML files (merged: names are global)"
    ),
]


def _report(problems: Sequence[Problem]) -> None:
    # plain lines, never wrapped: editors and CI annotators parse file:line:col
    for problem in problems:
        colour = "yellow" if problem.level == "warning" else "red"
        console.print(f"[{colour}]{escape(str(problem))}[/]", highlight=False, soft_wrap=True)


def _counts(config: Config) -> str:
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return ", ".join(
        (
            n(len(config.rules), "rule"),
            n(len(config.channels), "channel"),
            n(len(config.silences), "silence"),
        )
    )


# --- check --------------------------------------------------------------------------------------


def _database_url(settings: Settings) -> str | None:
    """POSTGRES_URL, else a running `rtmh up`'s database; never starts one (check is offline)."""
    if settings.postgres_url:
        return settings.postgres_url
    from rtmh.up.running import running_hub

    hub = running_hub(settings.data_dir)
    return hub.postgres_url if hub is not None else None


def _series_warnings(config: Config, url: str) -> list[Problem]:
    async def fetch() -> set[tuple[str, str]]:
        async with await psycopg.AsyncConnection.connect(
            normalise_url(url), autocommit=True, connect_timeout=5
        ) as conn:
            return await seen_series(conn)

    try:
        seen = asyncio.run(fetch())
    except psycopg.Error as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        console.print(
            f"note: database checks skipped ({escape(reason)})", highlight=False, soft_wrap=True
        )
        return []
    keys = {key for key, _ in seen}
    types = {metric for _, metric in seen}
    found: list[Problem] = []
    for item in config.rules:
        rule = item.rule
        if rule.no_data_seconds is not None:
            continue  # an absence rule is about keys that stopped sending: silence is expected
        node = item.node
        pattern = rule.window_key_pattern
        if not any(fnmatchcase(key, pattern) for key in keys):
            found.append(
                Problem(
                    node.at("window_key_pattern") if node else item.mark,
                    f"{item.where}.window_key_pattern",
                    f"{pattern!r} matches no service seen in the last day; check the spelling",
                    "warning",
                )
            )
        elif rule.metric_type not in types and rule.metric_type not in BUILTIN_METRIC_TYPES:
            found.append(
                Problem(
                    node.at("metric_type") if node else item.mark,
                    f"{item.where}.metric_type",
                    f"no metric {rule.metric_type!r} was seen in the last day; check the name",
                    "warning",
                )
            )
    return found


@config_app.command("check")
def check(
    ctx: typer.Context,
    files: Files,
    no_db: Annotated[
        bool, typer.Option("--no-db", help="skip the checks that need the database")
    ] = False,
) -> None:
    """Validate files without changing anything (like `promtool check rules`); exit 1 on errors.

    Secrets' ${VAR} references need not be set here. With a reachable database (POSTGRES_URL
    or a running `rtmh up`), also warns about rules that match no service seen in the last day.
    """
    config = load_files(files)
    problems = list(config.problems)
    if not config.errors and not no_db:
        url = _database_url(ctx.obj)
        if url is not None:
            problems += _series_warnings(config, url)
    _report(problems)
    errors = sum(1 for p in problems if p.level == "error")
    warnings = len(problems) - errors
    if errors:
        console.print(
            f"{errors} error(s), {warnings} warning(s) in {len(files)} file(s); nothing is valid "
            "until the errors are fixed",
            highlight=False,
        )
        raise typer.Exit(1)
    tail = f", {warnings} warning(s)" if warnings else ""
    out.print(f"ok: {_counts(config)} in {len(files)} file(s){tail}", highlight=False)


# --- apply --------------------------------------------------------------------------------------

_SIGNS = {"create": "+", "change": "~", "remove": "-", "unchanged": "="}
_COLOURS = {"create": "green", "change": "yellow", "remove": "red", "unchanged": "dim"}


def _shown(value: Any) -> str:
    if value == SECRET:
        return SECRET
    if value is None:
        return "(none)"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return repr(value) if isinstance(value, str) else str(value)


def _print_diff(diff: Diff, *, dry_run: bool) -> None:
    for change in diff.changes:
        _print_change(change)
    prefix = "dry run, nothing applied: " if dry_run else ""
    out.print(f"{prefix}{diff.summary()}", highlight=False)


def _print_change(change: Change) -> None:
    words = {"create": "created", "change": "changed", "remove": "removed"}
    verb = words.get(change.action, "unchanged")
    colour = _COLOURS[change.action]
    line = f"{_SIGNS[change.action]} {change.kind} {change.name}: {verb}"
    if change.note and change.action != "remove":
        line += f" ({change.note})"
    out.print(f"[{colour}]{escape(line)}[/]", highlight=False, soft_wrap=True)
    for item in change.fields:
        out.print(
            escape(f"    {item.field}: {_shown(item.old)} -> {_shown(item.new)}"),
            highlight=False,
            soft_wrap=True,
        )


@config_app.command("apply")
def apply(
    ctx: typer.Context,
    files: Files,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the diff and change nothing")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="also remove what a file once declared and these files do not"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the diff as JSON")] = False,
) -> None:
    """Make the database hold what the files declare, in one transaction; print the diff.

    Applying the same files twice changes nothing; on any error nothing changes. Secrets'
    ${VAR} references are read from the environment. Without --prune nothing is removed.
    """
    env = dict(os.environ)
    config = load_files(files, env=env)
    _report(config.problems)
    if config.errors:
        console.print(
            f"{len(config.errors)} error(s): nothing applied", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)
    settings: Settings = ctx.obj
    try:
        policy = TargetPolicy.from_settings(settings)
    except ValueError as err:
        raise _fail(str(err), 2) from None

    async def work(conn: psycopg.AsyncConnection[Any]) -> Diff:
        return await apply_config(conn, config, env, policy, prune=prune, dry_run=dry_run)

    diff = run_with_connection(ctx, work)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "changed": diff.changed,
                    "summary": diff.summary(),
                    "changes": [c.as_dict() for c in diff.changes],
                }
            )
        )
        return
    _print_diff(diff, dry_run=dry_run)


# --- export, schema -----------------------------------------------------------------------------


@config_app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file, not stdout")
    ] = None,
) -> None:
    """Write the database's rules, channels and live declared silences as a config file.

    Secrets are written as ${RTMH_SECRET_<CHANNEL>_<KEY>} references, never their values; the
    variables `apply` will need are listed on stderr.
    """
    exported = run_with_connection(ctx, export_config)
    if output is None:
        print(exported.text, end="", flush=True)
    else:
        output.write_text(exported.text, "utf-8")
        console.print(f"wrote {output}", highlight=False)
    if exported.variables:
        console.print("apply needs these environment variables:", highlight=False)
        for name, what in exported.variables:
            console.print(f"  {name}  ({what})", highlight=False, soft_wrap=True)


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a config file (for editors, e.g. yaml-language-server)."""
    print(json.dumps(json_schema(), indent=2), flush=True)
