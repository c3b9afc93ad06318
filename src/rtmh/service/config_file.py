"""The YAML config file of `rtmh config`: rules, channels and silences as code.

Role: read one or more files, keep where every value came from (file, line, column, via
PyYAML's composed nodes), and check each declaration with the validator the rest of the hub
uses for that kind (:func:`rtmh.rules.model.validate_rule`,
:func:`rtmh.notify.channels.config.parse_channel`, :func:`rtmh.service.silences.check_matchers`
and ``check_period``), so a file that passes here is what the API would accept. Their field
errors come back as ``file:line:col: rules[1].threshold: must be a number, got str``.

Channel secrets are never written in a file: a secret value is a ``${VAR}`` reference (text
around it is allowed, e.g. ``Bearer ${TOKEN}``), resolved from the environment by ``apply``.
``check`` does not need the variables: an unset one is replaced by a placeholder of the right
shape, so the channel's other settings are still checked.

Also here: warnings for rules that can never or always fire, and the JSON Schema of the file
(:func:`json_schema`), derived from :class:`rtmh.rules.model.Rule` for rules. Pure: no I/O except
reading the files; the database side is :mod:`rtmh.service.config_sync`.

Why it runs past 500 lines: it is the whole file format in one place (the marked reader, one
reader per kind, the cross-file checks and the schema); split up, every part would need the
reader's private node type and the same error plumbing.
"""

from __future__ import annotations

import base64
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import yaml

from rtmh.notify.channels import ChannelConfigError
from rtmh.notify.channels.config import CHANNEL_TYPES, STANDARD_SECRET_PREFIX, parse_channel
from rtmh.records import SEVERITIES
from rtmh.rules.condition import CONDITIONS
from rtmh.rules.model import AGGREGATIONS, COUNT_METRIC_TYPES, Rule, RuleError, validate_rule
from rtmh.rules.silences import MATCHER_KEYS
from rtmh.service.channels import _NAME as CHANNEL_NAME
from rtmh.service.errors import Invalid
from rtmh.service.silences import MAX_SECONDS, check_matchers, check_period
from rtmh.windows.partials import ERROR_RATE, METRIC_PREFIX

Level = Literal["error", "warning"]

TOP_KEYS: Final = ("rules", "channels", "silences")
#: a rule in a file: the API's fields (the server sets id, created_at, updated_at)
RULE_KEYS: Final = tuple(f for f in Rule.__struct_fields__ if f != "id")
CHANNEL_KEYS: Final = ("name", "type", "config", "secrets", "enabled")
SILENCE_KEYS: Final = ("name", "matchers", "starts_at", "ends_at", "duration", "comment")
#: metric types every hub has (windows.partials); any other is a metric's own name
BUILTIN_METRIC_TYPES: Final = ("log_count", "error_count", "error_rate", "event_count")

_REF: Final = re.compile(r"\$\{([^}]*)\}")
_VAR: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A metric's name as the metrics topic carries it (Telegraf's measurement_field included).
_METRIC_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,199}")
_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PLACEHOLDER: Final = "rtmh-check-placeholder"
# Values of the right shape for `check` when a secret's variable is not set: parse_channel
# checks these keys' formats, and a placeholder that fails them would be a false error.
_PLACEHOLDERS: Final[Mapping[str, str]] = {
    "url": "https://placeholder.invalid/",
    "standard_webhooks_secret": STANDARD_SECRET_PREFIX + base64.b64encode(bytes(32)).decode(),
}


# ------------------------------------------------------------------------------------------------
# Where things are, and what is wrong with them
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    """A place in a file; line and column count from 1, as editors do."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: an error refuses the files, a warning does not."""

    mark: Mark
    path: str
    message: str
    level: Level = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        tag = "warning: " if self.level == "warning" else ""
        return f"{self.mark}: {tag}{where}{self.message}"


class _Node:
    """A YAML value with its mark, and for mappings the marks of each key and value."""

    __slots__ = ("items", "keys", "mark", "value")

    def __init__(
        self,
        value: Any,
        mark: Mark,
        keys: dict[str, Mark] | None = None,
        items: dict[str, _Node] | list[_Node] | None = None,
    ) -> None:
        self.value = value
        self.mark = mark
        self.keys = keys or {}
        self.items = items

    def child(self, key: str | int) -> _Node | None:
        if isinstance(self.items, dict) and isinstance(key, str):
            return self.items.get(key)
        if isinstance(self.items, list) and isinstance(key, int) and 0 <= key < len(self.items):
            return self.items[key]
        return None

    def at(self, *path: str | int) -> Mark:
        """The mark of the deepest node along ``path`` that exists (the value's, not the key's)."""
        node: _Node = self
        for key in path:
            found = node.child(key)
            if found is None:
                return node.mark
            node = found
        return node.mark

    def key_mark(self, key: str) -> Mark:
        return self.keys.get(key, self.mark)


class _FileError(Exception):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _mark(file: str, node: yaml.Node) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(file: str, node: yaml.Node, loader: yaml.SafeLoader) -> _Node:
    """Plain Python values (dict, list, str, int, float, bool, None, datetime) with marks.

    Duplicate keys are refused: PyYAML would keep the last one without a word, and a rule
    whose threshold is set twice is a review mistake worth stopping.
    """
    mark = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        values: dict[str, Any] = {}
        items: dict[str, _Node] = {}
        keys: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _FileError(_mark(file, key_node), f"keys must be text, got {key!r}")
            if key in items:
                raise _FileError(_mark(file, key_node), f"duplicate key {key!r}")
            child = _convert(file, value_node, loader)
            values[key], items[key], keys[key] = child.value, child, _mark(file, key_node)
        return _Node(values, mark, keys, items)
    if isinstance(node, yaml.SequenceNode):
        children = [_convert(file, item, loader) for item in node.value]
        return _Node([c.value for c in children], mark, None, children)
    return _Node(loader.construct_object(node, deep=True), mark)


def _read(path: Path, shown: str) -> _Node | None:
    """The file's document, or None for an empty file."""
    text = path.read_text("utf-8")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(shown, root, loader)
    except yaml.MarkedYAMLError as err:
        where = err.problem_mark or err.context_mark
        mark = Mark(shown, where.line + 1, where.column + 1) if where else Mark(shown, 1, 1)
        raise _FileError(mark, f"not valid YAML: {err.problem or err.context}") from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------------------------
# The declarations
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclaredRule:
    rule: Rule
    file: str
    mark: Mark
    #: where it is in its file, e.g. rules[2]
    where: str = ""
    #: its YAML node, for the marks of its fields
    node: _Node | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class DeclaredChannel:
    name: str
    type: str
    config: dict[str, Any]
    #: as written: strings holding ${VAR} references
    secrets: dict[str, Any]
    enabled: bool
    file: str
    mark: Mark
    where: str = ""
    #: the mark of each secret value, by dotted key (for "variable not set" errors)
    secret_marks: dict[str, Mark] = field(default_factory=dict)
    node: _Node | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class DeclaredSilence:
    name: str
    matchers: dict[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    duration_seconds: float | None
    comment: str
    file: str
    mark: Mark
    where: str = ""
    node: _Node | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Config:
    """Everything the files declare, merged, and what is wrong with it."""

    rules: list[DeclaredRule] = field(default_factory=list)
    channels: list[DeclaredChannel] = field(default_factory=list)
    silences: list[DeclaredSilence] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: every channel name a file declares, valid or not: a rule naming a channel that has its
    #: own error gets no second, misleading "not defined" error
    channel_names: set[str] = field(default_factory=set)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def load_config(
    paths: Sequence[Path],
    *,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Config:
    """Read and check ``paths`` together (names are unique across all of them).

    ``env`` given (apply): every ``${VAR}`` must be set in it, and the channels are parsed with
    the real values. None (check): unset variables become placeholders.
    """
    config = Config()
    now = now or datetime.now(UTC)
    for path in paths:
        shown = str(path)
        try:
            root = _read(path, shown)
        except _FileError as err:
            config.problems.append(Problem(err.mark, "", err.message))
            continue
        except (OSError, UnicodeDecodeError) as err:
            config.problems.append(Problem(Mark(shown, 1, 1), "", f"cannot read the file: {err}"))
            continue
        if root is None:
            continue
        _document(config, root, shown, env, now)
    _cross_checks(config)
    return config


def _document(
    config: Config, root: _Node, file: str, env: Mapping[str, str] | None, now: datetime
) -> None:
    def error(mark: Mark, path: str, message: str) -> None:
        config.problems.append(Problem(mark, path, message))

    if not isinstance(root.value, dict):
        error(root.mark, "", f"must be a mapping with {', '.join(TOP_KEYS)}")
        return
    for key in root.value:
        if key not in TOP_KEYS:
            error(root.key_mark(key), key, f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    for section, reader in (
        ("rules", _rule),
        ("channels", _channel),
        ("silences", _silence),
    ):
        node = root.child(section)
        if node is None or node.value is None:
            continue
        if not isinstance(node.value, list):
            error(node.mark, section, f"must be a list, got {_type_name(node.value)}")
            continue
        for index, item in enumerate(node.items or []):
            assert isinstance(item, _Node)
            where = f"{section}[{index}]"
            if not isinstance(item.value, dict):
                error(item.mark, where, f"must be a mapping, got {_type_name(item.value)}")
                continue
            reader(config, item, where, file, env, now)


def _unknown_keys(config: Config, node: _Node, where: str, allowed: Sequence[str]) -> bool:
    bad = [k for k in node.value if k not in allowed]
    for key in bad:
        hint = difflib.get_close_matches(key, allowed, n=1)
        also = f" (did you mean {hint[0]}?)" if hint else ""
        config.problems.append(
            Problem(
                node.key_mark(key),
                f"{where}.{key}",
                f"unknown key{also}; allowed: {', '.join(allowed)}",
            )
        )
    return bool(bad)


# --- rules --------------------------------------------------------------------------------------


def _rule(
    config: Config,
    node: _Node,
    where: str,
    file: str,
    _env: Mapping[str, str] | None,
    _now: datetime,
) -> None:
    fields: dict[str, Any] = node.value
    if _unknown_keys(config, node, where, RULE_KEYS):
        return
    try:
        rule = validate_rule(fields)
    except RuleError as err:
        name = err.field.split(".")[0]
        mark = node.at(name) if name in fields else node.mark
        config.problems.append(Problem(mark, f"{where}.{err.field}", _with_hint(err)))
        return
    bad_pattern = glob_problem(rule.window_key_pattern)
    if bad_pattern:
        mark = node.at("window_key_pattern")
        config.problems.append(Problem(mark, f"{where}.window_key_pattern", bad_pattern))
        return
    metric = metric_type_problem(rule.metric_type)
    if metric:
        config.problems.append(Problem(node.at("metric_type"), f"{where}.metric_type", metric))
        return
    config.rules.append(DeclaredRule(rule, file, node.mark, where, node))
    for path, message in firing_warnings(rule):
        config.problems.append(Problem(node.at(path), f"{where}.{path}", message, "warning"))


def _with_hint(err: RuleError) -> str:
    # validate_rule says what is wrong; in a file, also say how to write it right
    if err.field in ("threshold", "recovery_threshold") and "finite" in err.problem:
        return f"{err.problem}; write a plain number such as 0.05"
    if err.problem == "required":
        return "required; add it to the rule"
    return err.problem


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable shell-style glob, or None.

    fnmatch accepts any text and reads an unclosed ``[`` as a literal bracket: in a window key
    that is almost always a typo that makes the rule match nothing, so it is refused here.
    """
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "[":
            end = index + 1
            if end < len(pattern) and pattern[end] in "!^":
                end += 1
            if end < len(pattern) and pattern[end] == "]":
                end += 1
            close = pattern.find("]", end)
            if close < 0:
                return (
                    f"{pattern!r} is not a valid pattern: '[' at position {index + 1} is never "
                    "closed; close the set with ']' or write a literal '[' as '[[]'"
                )
            index = close + 1
            continue
        index += 1
    if pattern != pattern.strip():
        return f"{pattern!r} has leading or trailing spaces; window keys never do"
    return None


def metric_type_problem(metric_type: str) -> str | None:
    """Why ``metric_type`` names no metric the hub can produce, or None."""
    if metric_type in BUILTIN_METRIC_TYPES:
        return None
    name = metric_type.removeprefix(METRIC_PREFIX)
    near = difflib.get_close_matches(metric_type, BUILTIN_METRIC_TYPES, n=1, cutoff=0.8)
    if near or not _METRIC_NAME.fullmatch(name):
        hint = f"did you mean {near[0]}? " if near else ""
        return (
            f"unknown metric type {metric_type!r}; {hint}use one of "
            f"{', '.join(BUILTIN_METRIC_TYPES)} or the name of a metric sent on the metrics topic "
            "(letters, digits, _ . : / -)"
        )
    return None


def _value_range(rule: Rule) -> tuple[float, float] | None:
    """The values the rule's aggregate can take, when the metric type says (else None)."""
    if rule.aggregation in ("count",) or rule.metric_type in COUNT_METRIC_TYPES:
        return (0.0, math.inf)
    if rule.metric_type == ERROR_RATE:
        # sum of a ratio window is its error count; every other aggregate is a rate
        return (0.0, math.inf) if rule.aggregation == "sum" else (0.0, 1.0)
    return None


def firing_warnings(rule: Rule) -> list[tuple[str, str]]:
    """(field, message) when the condition can never be true, or is always true, for every
    value the metric can take (error_rate is in [0, 1]; counts are >= 0)."""
    if rule.no_data_seconds is not None:
        return []  # absence rules are judged on a count of 0 and checked by validate_rule
    bounds = _value_range(rule)
    if bounds is None:
        return []
    low, high = bounds
    t, cond = rule.threshold, rule.condition
    what = f"{rule.metric_type} {rule.aggregation}"
    span = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
    never = {
        ">": t >= high,
        ">=": t > high,
        "<": t <= low,
        "<=": t < low,
        "==": not low <= t <= high,
        "!=": False,
    }[cond]
    always = {
        ">": t < low,
        ">=": t <= low,
        "<": t > high,
        "<=": t >= high,
        "==": False,
        "!=": not low <= t <= high,
    }[cond]
    if never:
        return [
            (
                "threshold",
                f"the rule can never fire: {what} is {span}, so '{cond} {t:g}' is never true",
            )
        ]
    if always:
        return [
            (
                "threshold",
                f"the rule always fires: {what} is {span}, so '{cond} {t:g}' is always true",
            )
        ]
    return []


# --- channels -----------------------------------------------------------------------------------


def _channel(
    config: Config,
    node: _Node,
    where: str,
    file: str,
    env: Mapping[str, str] | None,
    _now: datetime,
) -> None:
    fields: dict[str, Any] = node.value

    def error(path: Sequence[str | int], message: str, *, key: bool = False) -> None:
        mark = node.key_mark(str(path[0])) if key else node.at(*path)
        dotted = ".".join(str(p) for p in path)
        config.problems.append(Problem(mark, f"{where}.{dotted}", message))

    if _unknown_keys(config, node, where, CHANNEL_KEYS):
        return
    for key in ("name", "type"):
        if key not in fields:
            config.problems.append(Problem(node.mark, f"{where}.{key}", "required; add it"))
            return
        if not isinstance(fields[key], str):
            error([key], f"must be a string, got {_type_name(fields[key])}")
            return
    name, type_ = fields["name"], fields["type"]
    config.channel_names.add(name)
    if not CHANNEL_NAME.fullmatch(name):
        error(
            ["name"],
            "use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
        return
    if type_ not in CHANNEL_TYPES:
        error(["type"], f"unknown value {type_!r}; expected one of {', '.join(CHANNEL_TYPES)}")
        return
    enabled = fields.get("enabled", True)
    if not isinstance(enabled, bool):
        error(["enabled"], f"must be true or false, got {_type_name(enabled)}")
        return
    conf = fields.get("config") or {}
    secrets = fields.get("secrets") or {}
    for key, value in (("config", conf), ("secrets", secrets)):
        if not isinstance(value, dict):
            error([key], f"must be a mapping, got {_type_name(value)}")
            return
    marks: dict[str, Mark] = {}
    resolved: dict[str, Any] = {}
    secrets_node = node.child("secrets")
    ok = True

    def resolve(path: list[str], text: object, mark: Mark) -> str | None:
        nonlocal ok
        marks[".".join(path)] = mark
        try:
            return resolve_refs(text, env, placeholder=_PLACEHOLDERS.get(path[0], _PLACEHOLDER))
        except Invalid as err:
            dotted = ".".join(["secrets", *path])
            config.problems.append(Problem(mark, f"{where}.{dotted}", err.problem))
            ok = False
            return None

    for key, value in secrets.items():
        child = secrets_node.child(key) if secrets_node else None
        mark = child.mark if child else node.mark
        if isinstance(value, dict):
            resolved[key] = {
                sub: resolve([key, sub], text, child.at(sub) if child else mark)
                for sub, text in value.items()
            }
        else:
            resolved[key] = resolve([key], value, mark)
    if not ok:
        return
    try:
        parse_channel(name, type_, conf, resolved)
    except ChannelConfigError as err:
        path = err.field.split(".")
        mark = node.at(*path) if path[0] in fields else node.mark
        config.problems.append(Problem(mark, f"{where}.{err.field}", err.problem))
        return
    config.channels.append(
        DeclaredChannel(
            name, type_, dict(conf), dict(secrets), enabled, file, node.mark, where, marks, node
        )
    )


def resolve_refs(value: object, env: Mapping[str, str] | None, *, placeholder: str) -> str:
    """A secret's text with every ``${VAR}`` replaced: from ``env``, or (env None, at check
    time) by ``placeholder``. Raises Invalid (field "secrets") when the value holds no reference
    (a literal secret in a file), a reference is malformed, or a variable is not set."""
    if not isinstance(value, str):
        raise Invalid(
            "secrets", f"must be a string holding a ${{VAR}} reference, got {_type_name(value)}"
        )
    refs = list(_REF.finditer(value))
    if not refs:
        if "${" in value:
            raise Invalid("secrets", "malformed reference: '${' is never closed; write ${NAME}")
        raise Invalid(
            "secrets",
            "a literal secret in a file; write a reference such as ${MY_SECRET} and set that "
            "environment variable when you run `rtmh config apply`",
        )
    for ref in refs:
        if not _VAR.fullmatch(ref.group(1)):
            raise Invalid(
                "secrets",
                f"malformed reference ${{{ref.group(1)}}}: a variable name is letters, digits "
                "and '_', not starting with a digit",
            )
    if "${" in _REF.sub("", value):
        raise Invalid("secrets", "malformed reference: '${' is never closed; write ${NAME}")

    def one(ref: re.Match[str]) -> str:
        name = ref.group(1)
        if env is None:
            return placeholder if ref.group(0) == value else _PLACEHOLDER
        if name not in env:
            raise Invalid(
                "secrets", f"environment variable {name} is not set; export it before apply"
            )
        return env[name]

    return _REF.sub(one, value)


def resolve_secrets(channel: DeclaredChannel, env: Mapping[str, str]) -> dict[str, Any]:
    """The channel's secrets with their values from ``env`` (call after a clean load)."""
    out: dict[str, Any] = {}
    for key, value in channel.secrets.items():
        if isinstance(value, dict):
            out[key] = {k: resolve_refs(v, env, placeholder="") for k, v in value.items()}
        else:
            out[key] = resolve_refs(value, env, placeholder="")
    return out


# --- silences -----------------------------------------------------------------------------------


def parse_duration(value: object) -> float:
    """Seconds from ``90`` (seconds), ``"90m"``, ``"2h"``, ``"1d12h"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 2h, 90m or 1d12h, got bool")
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    if isinstance(value, str):
        found = _DURATION.fullmatch(value.strip())
        if found and any(found.groups()):
            d, h, m, s = (int(g or 0) for g in found.groups())
            seconds = float(((d * 24 + h) * 60 + m) * 60 + s)
            if seconds > 0:
                return seconds
    raise ValueError(f"must be a duration such as 2h, 90m or 1d12h, got {value!r}")


def _silence(
    config: Config,
    node: _Node,
    where: str,
    file: str,
    _env: Mapping[str, str] | None,
    now: datetime,
) -> None:
    fields: dict[str, Any] = node.value

    def error(key: str, message: str) -> None:
        mark = node.at(*key.split(".")) if key.split(".")[0] in fields else node.mark
        config.problems.append(Problem(mark, f"{where}.{key}", message))

    if _unknown_keys(config, node, where, SILENCE_KEYS):
        return
    name = fields.get("name")
    if name is None:
        error("name", "required: a declared silence needs a name (its identity across applies)")
        return
    if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
        error("name", "use 1 to 63 letters, digits, '_', '.' or '-', starting with one of the two")
        return
    matchers = fields.get("matchers")
    if not isinstance(matchers, dict):
        error("matchers", f"must be a mapping of {', '.join(MATCHER_KEYS)} to globs")
        return
    try:
        checked = check_matchers(matchers)
    except Invalid as err:
        key = err.field if err.field.startswith("matchers") else "matchers"
        error(key, err.problem)
        return
    for key, pattern in checked.items():
        bad = glob_problem(pattern)
        if bad:
            error(f"matchers.{key}", bad)
            return
    comment = fields.get("comment", "")
    if not isinstance(comment, str):
        error("comment", f"must be a string, got {_type_name(comment)}")
        return
    times: dict[str, datetime | None] = {}
    for key in ("starts_at", "ends_at"):
        value = fields.get(key)
        if value is not None and not isinstance(value, datetime):
            error(key, "must be a time with a zone, e.g. 2026-12-01T12:00:00Z")
            return
        if isinstance(value, datetime) and value.tzinfo is None:
            error(key, "give a time zone (e.g. 2026-12-01T12:00:00Z)")
            return
        times[key] = value
    duration: float | None = None
    if "duration" in fields:
        try:
            duration = parse_duration(fields["duration"])
        except ValueError as err:
            error("duration", str(err))
            return
        if duration > MAX_SECONDS:
            error("duration", "a silence lasts at most 366 days; disable the rule instead")
            return
    if (times["ends_at"] is None) == (duration is None):
        error("ends_at", "give either ends_at or duration")
        return
    starts, ends = times["starts_at"], times["ends_at"]
    if ends is not None and ends <= now:
        config.problems.append(
            Problem(
                node.at("ends_at"),
                f"{where}.ends_at",
                f"ended at {ends.isoformat()}: it mutes nothing; remove it from the file",
                "warning",
            )
        )
    else:
        try:
            # the same rules as `rtmh silence add` and POST /silences
            check_period(starts, ends, duration, now)
        except Invalid as err:
            error(err.field, err.problem)
            return
    config.silences.append(
        DeclaredSilence(
            name, checked, starts, ends, duration, comment, file, node.mark, where, node
        )
    )


# --- across files -------------------------------------------------------------------------------


def _cross_checks(config: Config) -> None:
    """Names unique across every file; every channel a rule names is declared."""

    def unique(kind: str, items: Sequence[Any], name: Callable[[Any], str]) -> None:
        first: dict[str, Mark] = {}
        for item in items:
            key = name(item)
            if key in first:
                config.problems.append(
                    Problem(
                        item.node.at("name") if item.node else item.mark,
                        f"{item.where}.name",
                        f"duplicate {kind} name {key!r} (first declared at {first[key]}); "
                        "names must be unique across all files",
                    )
                )
            else:
                first[key] = item.node.at("name") if item.node else item.mark

    unique("rule", config.rules, lambda r: r.rule.name)
    unique("channel", config.channels, lambda c: c.name)
    unique("silence", config.silences, lambda s: s.name)
    declared = config.channel_names
    for item in config.rules:
        for channel in item.rule.channels:
            if channel not in declared:
                written = item.node.child("channels") if item.node else None
                index = written.value.index(channel) if written else 0
                config.problems.append(
                    Problem(
                        written.at(index) if written else item.mark,
                        f"{item.where}.channels",
                        f"channel {channel!r} is not defined; add it under channels: "
                        "or remove it from the rule",
                    )
                )


# ------------------------------------------------------------------------------------------------
# JSON Schema
# ------------------------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a config file, for editors. Semantics beyond types (e.g.
    recovery_threshold on the healthy side) are the validators' job: `rtmh config check`."""
    rule_schema = msgspec.json.schema(Rule)["$defs"]["Rule"]
    properties = {k: v for k, v in rule_schema["properties"].items() if k != "id"}
    properties["aggregation"]["enum"] = list(AGGREGATIONS)
    properties["condition"] = {"enum": list(CONDITIONS)}
    properties["severity"]["enum"] = list(SEVERITIES)
    properties["metric_type"] = {
        "type": "string",
        "description": f"{', '.join(BUILTIN_METRIC_TYPES)}, or a metric's own name",
    }
    properties["channels"]["items"] = {"type": "string", "pattern": CHANNEL_NAME.pattern}
    name = {"type": "string", "pattern": f"^{CHANNEL_NAME.pattern}$"}
    ref = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"}
    secret_value = {
        "anyOf": [ref, {"type": "object", "additionalProperties": ref}],
        "description": "a ${VAR} reference, resolved from the environment by apply",
    }
    when = {"type": "string", "format": "date-time"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://rtmh.dev/schemas/config.json",
        "title": "RTMH config: rules, channels and silences",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": rule_schema["required"],
                    "properties": properties,
                },
            },
            "channels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "type"],
                    "properties": {
                        "name": name,
                        "type": {"enum": list(CHANNEL_TYPES)},
                        "config": {"type": "object"},
                        "secrets": {"type": "object", "additionalProperties": secret_value},
                        "enabled": {"type": "boolean", "default": True},
                    },
                },
            },
            "silences": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "matchers"],
                    "properties": {
                        "name": name,
                        "matchers": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": False,
                            "properties": {
                                k: {"type": "string", "minLength": 1} for k in MATCHER_KEYS
                            },
                        },
                        "starts_at": when,
                        "ends_at": when,
                        "duration": {
                            "anyOf": [
                                {"type": "string", "pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"},
                                {"type": "number", "exclusiveMinimum": 0},
                            ]
                        },
                        "comment": {"type": "string"},
                    },
                    "oneOf": [{"required": ["ends_at"]}, {"required": ["duration"]}],
                },
            },
        },
    }


def silence_period(
    silence: DeclaredSilence, existing_start: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """Where the declared silence starts and ends. A ``duration`` counts from the first apply
    (``existing_start``), so applying the same file again later changes nothing."""
    start = silence.starts_at or existing_start or now
    if silence.ends_at is not None:
        return start, silence.ends_at
    return start, start + timedelta(seconds=silence.duration_seconds or 0)
