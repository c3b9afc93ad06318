"""The on-call commands' input: flags turned into the service layer's arguments.

Durations (``90s``, ``15m``, ``2h``, ``1d``), ISO 8601 times with a zone, ``key=glob``
matchers, rule files (one rule, a list, or `rtmh config`'s ``rules:``) and incident id prefixes.
A flag that cannot be parsed ends the command with one line and exit 2 (:func:`usage`); what
the service refuses stays a ServiceError (one line, exit 1, printed by run_with_connection).
"""

from __future__ import annotations

import getpass
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import typer
import yaml

from rtmh.console import make_console
from rtmh.rules.model import Rule
from rtmh.service import backtest

console = make_console(stderr=True)

_DURATION: Final = re.compile(r"^(\d+)([smhd])$")
_DURATION_LIKE: Final = re.compile(r"^\d+\s*[a-zA-Z]+$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# The ids between the lowest and the highest UUID with a given hex prefix: a primary-key range
# scan, where `id::text LIKE 'ab12%'` would read every incident. (Belongs in
# db/queries/incidents.sql with the service's other incident queries; see the handover note.)
def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def usage(message: str) -> typer.Exit:
    return fail(message, 2)


def actor(name: str | None) -> str:
    who = (name if name is not None else getpass.getuser()).strip()
    if not who:
        raise usage("--as: give a name")
    return f"cli:{who}"


# --- flags -> values ------------------------------------------------------------------------
def parse_duration(flag: str, text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``; anything else is a usage error naming the flag."""
    found = _DURATION.match(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise usage(f"{flag}: {text!r} is not a duration; use e.g. 90s, 15m, 2h or 1d")
    return timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])


def parse_time(flag: str, text: str) -> datetime:
    """An ISO 8601 time with a zone (a zone-less time is refused, as the API refuses it)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise usage(f"{flag}: {text!r} is not an ISO 8601 time (e.g. 2026-12-01T12:00Z)") from None
    if moment.utcoffset() is None:
        raise usage(f"{flag}: {text!r} has no time zone; add Z or +01:00")
    return moment


def parse_moment(flag: str, text: str, now: datetime) -> datetime:
    """A duration ago (``2h``) or an ISO 8601 time."""
    # number + letters (`2w`, `3 days`) meant a duration: say which durations there are
    if _DURATION_LIKE.match(text.strip()):
        return now - parse_duration(flag, text)
    return parse_time(flag, text)


def parse_matchers(pairs: list[str]) -> dict[str, str]:
    matchers: dict[str, str] = {}
    for pair in pairs:
        key, sep, glob = pair.partition("=")
        if not sep or not key.strip():
            raise usage(f"--match: {pair!r} is not key=glob (e.g. service=checkout)")
        if key.strip() in matchers:
            raise usage(f"--match: {key.strip()} given twice; a silence has one glob per key")
        matchers[key.strip()] = glob
    return matchers


def _read_definitions(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as err:
            raise fail(f"{path}: not JSON ({err})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise fail(f"{path}: not YAML ({' '.join(str(err).split())})") from None


def rule_from_file(path: Path, name: str | None) -> Rule:
    """One rule from a file holding a rule, a list of rules, or ``rules:`` (`rtmh config`).

    A definition the validator refuses raises its Invalid (field ``rule.<field>`` or
    ``rules[i].<field>``, as `rtmh config check` names them); the caller adds the file name.
    """
    data = _read_definitions(path)
    if isinstance(data, dict) and "rules" in data:
        data, field = data["rules"], "rules"
    elif isinstance(data, list):
        field = "rules"
    else:
        if name is not None and isinstance(data, dict) and data.get("name") != name:
            raise fail(f"{path} holds rule {data.get('name')!r}, not {name!r}")
        return backtest.rule_from_definition(data, "rule")
    if not isinstance(data, list) or not data:
        raise fail(f"{path}: {field} must be a non-empty list of rules")
    names = [r.get("name") if isinstance(r, dict) else None for r in data]
    if name is None:
        if len(data) > 1:
            listed = ", ".join(str(n) for n in names)
            raise usage(f"{path} holds {len(data)} rules ({listed}); pick one with --rule NAME")
        index = 0
    elif name in names:
        index = names.index(name)
    else:
        raise fail(f"{path} has no rule named {name!r}; it holds {', '.join(map(str, names))}")
    return backtest.rule_from_definition(data[index], f"{field}[{index}]")
