"""`rtmh token create|list|revoke`: API tokens from a shell, through rtmh.service.tokens; and
`rtmh dashboard`, a new sign-in link for the web dashboard (rtmh.service.sessions).

Without POSTGRES_URL these use the database of the `rtmh up` running on RTMH_DATA_DIR (or the
embedded one, started for the command).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from rich.table import Table

from rtmh.config import Settings
from rtmh.console import make_console
from rtmh.db.connect import DatabaseUnavailable, describe_url, normalise_url
from rtmh.db.locate import database
from rtmh.service.errors import ServiceError
from rtmh.service.sessions import CODE_TTL, create_login_code, login_link
from rtmh.service.tokens import TokenInfo, create_token, list_tokens, revoke_token
from rtmh.up.running import LOCAL_TOKEN_NAME, running_hub

T = TypeVar("T")

token_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
console = make_console(stderr=True)
out = make_console()


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run_with_connection(
    ctx: typer.Context, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """Run ``work`` on an autocommit connection to the hub's database; errors become one line."""
    settings: Settings = ctx.obj

    async def main(url: str) -> T:
        try:
            conn = await psycopg.AsyncConnection.connect(
                normalise_url(url), autocommit=True, connect_timeout=5
            )
        except psycopg.OperationalError as err:
            reason = " ".join(str(err).split())
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {describe_url(url)}: {reason} "
                "(check POSTGRES_URL and that the server is running)"
            ) from None
        async with conn:
            return await work(conn)

    try:
        with database(settings, console) as url:
            return asyncio.run(main(url))
    except ServiceError as err:
        raise _fail(err.message) from None
    except DatabaseUnavailable as err:
        raise _fail(str(err)) from None


def _row(info: TokenInfo) -> dict[str, Any]:
    fields = info.as_dict()
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in fields.items()}


@token_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="who uses it: shown on the incident timeline")],
    scope: Annotated[str, typer.Option(help="read, write or admin")] = "read",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Make a token. It is printed once and cannot be shown again (only a hash is stored)."""
    token, info = run_with_connection(ctx, lambda c: create_token(c, name, scope))
    if as_json:
        out.print_json(json.dumps({**_row(info), "token": token}))
        return
    console.print(
        f"token {info.name!r} ({info.scope}) created; it is shown once, store it now:",
        highlight=False,
    )
    # the token alone on stdout, so `TOKEN=$(rtmh token create ci)` works
    print(token, flush=True)


@token_app.command("list")
def list_command(
    ctx: typer.Context,
    include_revoked: Annotated[bool, typer.Option("--all", help="revoked ones too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The tokens (never their secrets)."""
    infos = run_with_connection(ctx, lambda c: list_tokens(c, include_revoked=include_revoked))
    if as_json:
        out.print_json(json.dumps([_row(i) for i in infos]))
        return
    table = Table(title="API tokens")
    for column in ("id", "name", "scope", "created", "last used", "revoked"):
        table.add_column(column)
    for i in infos:
        table.add_row(
            str(i.id),
            i.name,
            i.scope,
            f"{i.created_at:%Y-%m-%d %H:%M}",
            f"{i.last_used_at:%Y-%m-%d %H:%M}" if i.last_used_at else "-",
            f"{i.revoked_at:%Y-%m-%d %H:%M}" if i.revoked_at else "-",
        )
    out.print(table)


@token_app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the token's name (or id)")],
) -> None:
    """Revoke a token: requests with it get 401 at once."""
    info = run_with_connection(ctx, lambda c: revoke_token(c, name))
    out.print(f"token {info.name!r} (id {info.id}) revoked", highlight=False)


def dashboard_command(
    ctx: typer.Context,
    token: Annotated[
        str,
        typer.Option(
            help="the token the browser acts as (its name goes on the timeline); "
            f"default: {LOCAL_TOKEN_NAME}, the one rtmh up makes"
        ),
    ] = LOCAL_TOKEN_NAME,
    url: Annotated[
        str | None,
        typer.Option(
            help="where the API is, e.g. https://rtmh.example.com; default: the running rtmh "
            "up's, else RTMH_API_HOST:RTMH_API_PORT"
        ),
    ] = None,
) -> None:
    """Print a link that signs a browser in to the dashboard, once, within 15 minutes."""
    settings: Settings = ctx.obj
    hub = running_hub(settings.data_dir)
    base = url or (hub.api_url if hub else f"http://{settings.api_host}:{settings.api_port}")
    code = run_with_connection(ctx, lambda c: create_login_code(c, token))
    minutes = int(CODE_TTL.total_seconds() // 60)
    console.print(
        f"open this link to sign in as {token!r} (it works once, within {minutes} min):",
        highlight=False,
    )
    # the link alone on stdout, so `xdg-open "$(rtmh dashboard)"` works
    print(login_link(base, code.text), flush=True)
