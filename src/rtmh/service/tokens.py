"""API tokens: made by `rtmh token create` (and the API's admin routes), checked on every request.

A token reads ``rtmh_<lookup>_<secret>``. The lookup part (public) finds the row; the secret
part (256 random bits) is checked against a salted SHA-256 in constant time. Only the salt and
the hash are stored, so a copy of the database does not hand out tokens; a slow password hash
would add nothing for a secret of that entropy. The whole token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, get_args

import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.service.errors import Conflict, Invalid, NotFound

SQL = load("tokens")

Scope = Literal["read", "write", "admin"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
#: what each scope may do includes the scopes before it
_RANK: Final = {scope: rank for rank, scope in enumerate(SCOPES)}

PREFIX: Final = "rtmh_"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}")
_CREDENTIAL: Final = re.compile(r"([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# compared against when the lookup finds no row, so a miss costs what a wrong secret costs
_DUMMY_SALT: Final = secrets.token_bytes(16)
_DUMMY_HASH: Final = hashlib.sha256(_DUMMY_SALT).digest()
# last_used_at is for `rtmh token list`; a minute's precision saves a write per request
_TOUCH_EVERY: Final = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: never its secret."""

    id: int
    name: str
    scope: Scope
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TokenInfo:
        return cls(
            id=row["id"],
            name=row["name"],
            scope=row["scope"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            revoked_at=row["revoked_at"],
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name goes on the incident timeline as the actor."""

    token_id: int
    name: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        return _RANK[self.scope] >= _RANK[needed]


def hash_secret(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


@dataclass(frozen=True, slots=True)
class Minted:
    """A new ``<lookup>_<secret>`` credential: what to store (lookup, salt, hash) and the
    secret, shown once. Tokens, login codes and dashboard sessions are all made this way."""

    lookup: str
    secret: str
    salt: bytes
    secret_hash: bytes

    def text(self, prefix: str) -> str:
        return f"{prefix}{self.lookup}_{self.secret}"


def mint() -> Minted:
    salt = secrets.token_bytes(16)
    secret = secrets.token_urlsafe(32)
    return Minted(secrets.token_hex(8), secret, salt, hash_secret(salt, secret))


def parse_credential(prefix: str, text: str) -> tuple[str, str] | None:
    """(lookup, secret) of a ``<prefix><lookup>_<secret>`` string, or None."""
    if not text.startswith(prefix):
        return None
    found = _CREDENTIAL.fullmatch(text[len(prefix) :])
    return (found.group(1), found.group(2)) if found else None


def secret_matches(stored: tuple[bytes, bytes] | None, secret: str) -> bool:
    """Constant-time check of a secret against (salt, hash); with no row it still hashes, so a
    miss costs what a wrong secret costs."""
    salt, expected = stored if stored is not None else (_DUMMY_SALT, _DUMMY_HASH)
    return hmac.compare_digest(hash_secret(salt, secret), expected) and stored is not None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise Invalid(
            "name",
            "use 1 to 63 letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
        )
    return name


def check_scope(scope: str) -> Scope:
    for known in SCOPES:
        if scope == known:
            return known
    raise Invalid("scope", f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")


async def create_token(
    conn: psycopg.AsyncConnection[Any], name: str, scope: str
) -> tuple[str, TokenInfo]:
    """A new token: (the token, shown once; what is stored about it)."""
    check_name(name)
    checked = check_scope(scope)
    minted = mint()
    params = {
        "name": name,
        "scope": checked,
        "lookup": minted.lookup,
        "salt": minted.salt,
        "secret_hash": minted.secret_hash,
    }
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SQL.insert_token, params)
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            f"a live token named {name!r} exists; revoke it first (rtmh token revoke {name}) "
            "or choose another name"
        ) from None
    assert row is not None
    return minted.text(PREFIX), TokenInfo.from_row(row)


async def list_tokens(
    conn: psycopg.AsyncConnection[Any], *, include_revoked: bool = False
) -> list[TokenInfo]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_tokens, {"include_revoked": include_revoked})
        return [TokenInfo.from_row(row) for row in await cur.fetchall()]


async def revoke_token(conn: psycopg.AsyncConnection[Any], name_or_id: str) -> TokenInfo:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.revoke_token, {"key": name_or_id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no live token named {name_or_id!r} (rtmh token list shows them)")
    return TokenInfo.from_row(row)


async def verified_row(
    conn: psycopg.AsyncConnection[Any], prefix: str, query: str, text: str
) -> dict[str, Any] | None:
    """The row ``query`` finds by a ``<prefix><lookup>_<secret>`` credential's lookup, if the
    secret matches the row's salted hash; None when malformed, unknown or wrong. An unknown
    lookup still costs the hash. Tokens, login codes and sessions are all checked this way."""
    parsed = parse_credential(prefix, text)
    lookup, secret = parsed if parsed else ("", "x")
    row = None
    if parsed:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (lookup,))
            row = await cur.fetchone()
    if not secret_matches((row["salt"], row["secret_hash"]) if row else None, secret):
        return None
    return row


async def authenticate(conn: psycopg.AsyncConnection[Any], token: str) -> Principal | None:
    """The principal of a presented token, or None when it is malformed, unknown, revoked or
    wrong. The secret comparison is constant-time; an unknown lookup costs the same hash."""
    row = await verified_row(conn, PREFIX, SQL.token_by_lookup, token)
    if row is None:
        return None
    used = row["last_used_at"]
    if used is None or datetime.now(UTC) - used > _TOUCH_EVERY:
        await conn.execute(SQL.touch_token, (row["id"],))
    return Principal(token_id=row["id"], name=row["name"], scope=row["scope"])
