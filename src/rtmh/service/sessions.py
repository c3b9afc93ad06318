"""Signing in to the web dashboard: one-time login codes and the browser sessions they open.

`rtmh up` (and `rtmh dashboard`) print a link with a one-time code for an API token; opening it
trades the code for a session, which the browser keeps in an HttpOnly cookie and which acts as
that token (its name on the timeline, its scope). A user can also paste a token into the sign-in
page. The link never holds the token: a code works once and for minutes, so a URL kept in a
browser history or a proxy log is useless. Revoking the token ends its sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import psycopg

from rtmh.db.queries import load
from rtmh.service.errors import NotFound
from rtmh.service.tokens import Minted, Principal, mint, parse_credential, verified_row

SQL = load("sessions")

CODE_PREFIX: Final = "rtmhc_"
SESSION_PREFIX: Final = "rtmhs_"
#: how long an unused sign-in link works: long enough to switch to the browser, short enough
#: that an old terminal scrollback holds nothing useful
CODE_TTL: Final = timedelta(minutes=15)
#: a browser stays signed in this long (then it asks for a new link or a token)
SESSION_TTL: Final = timedelta(days=7)

Kind = Literal["login_code", "session"]


@dataclass(frozen=True, slots=True)
class Issued:
    """A code or a session: its text (shown once) and when it stops working."""

    text: str
    expires_at: datetime


def login_link(api_url: str, code: str) -> str:
    """The sign-in link for a code: the API's /login, which trades it for a session cookie."""
    return f"{api_url.rstrip('/')}/login?code={code}"


async def _insert(
    conn: psycopg.AsyncConnection[Any], token_id: int, kind: Kind, ttl: timedelta, prefix: str
) -> Issued:
    minted: Minted = mint()
    params = {
        "token_id": token_id,
        "kind": kind,
        "lookup": minted.lookup,
        "salt": minted.salt,
        "secret_hash": minted.secret_hash,
        "ttl_s": ttl.total_seconds(),
    }
    async with conn.transaction():
        await conn.execute(SQL.prune)
        cur = await conn.execute(SQL.insert_secret, params)
        row = await cur.fetchone()
    assert row is not None
    return Issued(minted.text(prefix), row[1])


async def create_login_code(
    conn: psycopg.AsyncConnection[Any], token_name: str, ttl: timedelta = CODE_TTL
) -> Issued:
    """A one-time code signing a browser in as the live token ``token_name``."""
    cur = await conn.execute(SQL.live_token_by_name, (token_name,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(
            f"no live token named {token_name!r}: make one with "
            f"rtmh token create {token_name} --scope write (or start rtmh up)"
        )
    return await _insert(conn, row[0], "login_code", ttl, CODE_PREFIX)


async def start_session(conn: psycopg.AsyncConnection[Any], principal: Principal) -> Issued:
    """A browser session acting as ``principal``'s token."""
    return await _insert(conn, principal.token_id, "session", SESSION_TTL, SESSION_PREFIX)


async def exchange_code(conn: psycopg.AsyncConnection[Any], code: str) -> Issued | None:
    """A session for a valid, unused, unexpired code (which is then used up), or None."""
    row = await verified_row(conn, CODE_PREFIX, SQL.code_by_lookup, code)
    if row is None:
        return None
    async with conn.transaction():
        used = await (await conn.execute(SQL.use_code, (row["id"],))).fetchone()
        if used is None:
            return None  # another browser exchanged it first
        return await _insert(conn, row["token_id"], "session", SESSION_TTL, SESSION_PREFIX)


async def session_principal(conn: psycopg.AsyncConnection[Any], cookie: str) -> Principal | None:
    """Who a session cookie acts as, or None when it is malformed, unknown, ended or expired,
    or its token was revoked."""
    row = await verified_row(conn, SESSION_PREFIX, SQL.session_principal, cookie)
    if row is None:
        return None
    return Principal(token_id=row["token_id"], name=row["name"], scope=row["scope"])


async def end_session(conn: psycopg.AsyncConnection[Any], cookie: str) -> None:
    """Sign out: the cookie stops working (whatever it holds; an unknown one is a no-op)."""
    parsed = parse_credential(SESSION_PREFIX, cookie)
    if parsed is not None:
        await conn.execute(SQL.end_session, (parsed[0],))
