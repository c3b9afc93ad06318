"""Opening connections, with failures turned into one line that says what to check."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached or refused us; the message is one actionable line."""


def describe_url(url: str) -> str:
    """host:port/db without the password, for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def normalise_url(url: str) -> str:
    # libpq accepts both schemes; keep one spelling in logs and child environments
    return "postgresql://" + url.removeprefix("postgresql://").removeprefix("postgres://")


def connect(url: str, *, autocommit: bool = False, timeout: int = 5) -> psycopg.Connection:
    try:
        return psycopg.connect(normalise_url(url), autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {describe_url(url)}: {reason} "
            "(check POSTGRES_URL and that the server is running)"
        ) from None
    except psycopg.ProgrammingError as err:
        raise DatabaseUnavailable(f"POSTGRES_URL is not a valid connection URL: {err}") from None
