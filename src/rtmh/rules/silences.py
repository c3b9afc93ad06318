"""Silences: which active silence, if any, mutes a notification. Pure, and the one place that
decides it: the rules stage asks when it queues a notification (the row is written
``suppressed``) and the notifier asks again at send time (the silence may be newer than the row);
both read the rows with the one query ``active_silences`` (db/queries/rules.sql) and record the
returned id in ``alert_notifications.suppressed_by``.

A silence's matchers (``{"rule": ..., "service": ..., "severity": ...}``) are shell-style globs
(``*``, ``?``, ``[...]``, case-sensitive like the rules' window_key_pattern); every key present
must match. A silence is active when ``starts_at <= now < ends_at``. A matcher key this version
does not know, a non-string value or an empty matcher set never matches: a malformed silence
must not mute more than its author meant, and a missed page is worse than an extra one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Final

MATCHER_KEYS: Final = ("rule", "service", "severity")


@dataclass(frozen=True, slots=True)
class Silence:
    """One ``silences`` row (only what matching needs)."""

    id: int
    starts_at: datetime
    ends_at: datetime
    matchers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Silence:
        """From a ``silences`` row as a mapping (the ``active_silences`` query, dict rows)."""
        return cls(
            id=int(row["id"]),
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            matchers=dict(row.get("matchers") or {}),
        )

    def is_active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, rule_name: str | None, service: str | None, severity: str | None) -> bool:
        """Every given matcher matches its field (a missing field is matched as "")."""
        if not self.matchers or set(self.matchers) - set(MATCHER_KEYS):
            return False
        values = {"rule": rule_name, "service": service, "severity": severity}
        return all(
            isinstance(pattern, str) and fnmatchcase(values[key] or "", pattern)
            for key, pattern in self.matchers.items()
        )


def validate_matchers(matchers: Any) -> dict[str, str]:
    """For the API: a non-empty object of known keys to non-empty glob strings."""
    if not isinstance(matchers, Mapping) or not matchers:
        raise ValueError("matchers must be a non-empty object")
    for key, pattern in matchers.items():
        if key not in MATCHER_KEYS:
            raise ValueError(f"matchers.{key}: unknown matcher; use {', '.join(MATCHER_KEYS)}")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"matchers.{key}: must be a non-empty string (a glob)")
    return dict(matchers)


def matching_silence(
    silences: Iterable[Silence],
    rule_name: str | None,
    service: str | None,
    severity: str | None,
    now: datetime,
) -> int | None:
    """The id of the active silence that mutes this notification, or None.

    When several match, the one ending last wins (ties: the lowest id), so the answer does not
    depend on row order and names the silence that keeps the alert quiet longest.
    """
    matching = [
        silence
        for silence in silences
        if silence.is_active(now) and silence.matches(rule_name, service, severity)
    ]
    if not matching:
        return None
    return min(matching, key=lambda silence: (-silence.ends_at.timestamp(), silence.id)).id
