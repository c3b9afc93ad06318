"""Search parameters given by people: time ranges (``since``/``until``) zone-aware, ordered and
bounded, and text that PostgreSQL can hold.

Shared by the read-only data resources (metrics, events, dead letters). A time without a zone is
refused rather than guessed: the server's zone is nobody's business, and a guess shifts a search
by hours without a word.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rtmh.service.errors import Invalid


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime
    until: datetime


def aware(field: str, value: datetime | None) -> datetime | None:
    """The value, refused (Invalid naming ``field``) when it carries no time zone."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise Invalid(field, "give a time zone (e.g. 2026-12-01T12:00:00Z or +01:00)")
    return value


def time_range(
    since: datetime | None,
    until: datetime | None,
    *,
    default: timedelta,
    longest: timedelta,
    now: datetime | None = None,
) -> TimeRange:
    """[since, until): until defaults to now, since to ``default`` before until. Invalid when
    since is not before until, or when the range is longer than ``longest`` (naming since)."""
    end = aware("until", until) or now or datetime.now(UTC)
    start = aware("since", since) or end - default
    if start >= end:
        raise Invalid("until", "must be after since")
    if end - start > longest:
        hours = (end - start).total_seconds() / 3600
        raise Invalid(
            "since",
            f"the range is at most {_span(longest)} (got {hours:.1f} hours); "
            "move since closer to until",
        )
    return TimeRange(start, end)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds} s"


def text(field: str, value: str | None) -> str | None:
    """The value, refused when it holds NUL, which no PostgreSQL text can (so nothing stored
    could match it, and the driver would refuse to send it)."""
    if value is not None and "\x00" in value:
        raise Invalid(field, "must not contain NUL (\\u0000)")
    return value
