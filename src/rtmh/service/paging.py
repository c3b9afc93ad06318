"""Keyset pagination: a page of rows and the opaque cursor of the next one.

A cursor is the sort key of the last row returned, base64url-encoded JSON, so the next page
starts strictly after it with an index range scan, however deep the reader goes (OFFSET would
read and drop every earlier row). Clients treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rtmh.service.errors import Invalid

T = TypeVar("T")

MAX_LIMIT = 500
#: the largest bigint: an id in a cursor past it is not one of ours
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    #: None on the last page
    next_cursor: str | None


def bad_cursor() -> Invalid:
    return Invalid("cursor", "not a cursor from this API; pass next_cursor as given")


def page_of(rows: list[T], limit: int, key: Callable[[T], Sequence[Any]]) -> Page[T]:
    """The page of rows fetched with ``LIMIT limit + 1``: the extra row only says that there is
    a next page, whose cursor is the sort ``key`` of the last row kept."""
    more = len(rows) > limit
    kept = rows[:limit]
    return Page(items=kept, next_cursor=encode_cursor(key(kept[-1])) if more else None)


def encode_cursor(key: Sequence[Any]) -> str:
    text = json.dumps(list(key), default=str, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    """The key a cursor carries; Invalid (field ``cursor``) when it is not one of ours."""
    if cursor is None or cursor == "":
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        key = None
    if not isinstance(key, list) or len(key) != arity:
        raise bad_cursor()
    return key


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit
