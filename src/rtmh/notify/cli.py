"""`rtmh notify ...` and `rtmh notifier`.

``notify_app`` is the ``notify`` sub-command group (``rtmh notify test CHANNEL``);
:func:`run_notifier` is what ``rtmh notifier`` runs. Both need POSTGRES_URL: channels and the
outbox live in the database the other services use, and starting a second embedded server on
the same data directory as a running ``rtmh up`` would fight over it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from rtmh.config import ConfigError, Settings, load_settings
from rtmh.db.connect import DatabaseUnavailable, connect, describe_url
from rtmh.notify import outbox
from rtmh.notify.channels import Channel, ChannelConfigError, DeliveryResult
from rtmh.notify.notifier import NotifierOptions, serve
from rtmh.notify.outbound import send_test
from rtmh.notify.targets import TargetPolicy

log = logging.getLogger(__name__)

notify_app = typer.Typer(
    help="Notification channels: send a test message through one.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_err = Console(stderr=True)


@notify_app.callback()
def _group() -> None:
    """Notification channels (configured in the notification_channels table)."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(ctx: typer.Context | None) -> Settings:
    obj = ctx.find_object(Settings) if ctx is not None else None
    if obj is not None:
        return obj
    try:
        return load_settings()
    except ConfigError as err:
        raise _fail(str(err), 2) from None


def _require_url(settings: Settings) -> str:
    if not settings.postgres_url:
        raise _fail(
            "POSTGRES_URL is not set: this command works on the database your services use "
            "(set POSTGRES_URL or --postgres-url); `rtmh up` runs everything on embedded defaults"
        )
    return settings.postgres_url


# --- rtmh notify test -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelTestResult:
    """What ``rtmh notify test`` did: the channel (None when it could not be loaded)."""

    exit_code: int
    channel: Channel | None
    result: DeliveryResult | None
    seconds: float = 0.0


@notify_app.command("test")
def test_command(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="the channel's name")],
) -> None:
    """Send a test notification through CHANNEL now and print the receiver's answer.

    Sent directly: no outbox row, no retries. Exit code 0 when the receiver accepted it.

    Disabled channels are tested too, so they can be checked before they are enabled. The
    channel may only reach what RTMH_ALLOWED_TARGETS allows, as in the notifier.
    """
    settings = _settings(ctx)
    targets = _targets(settings)
    outcome = run_notify_test(
        _require_url(settings), channel, public_url=settings.public_url, targets=targets
    )
    raise typer.Exit(outcome.exit_code)


def _targets(settings: Settings) -> TargetPolicy:
    try:
        return TargetPolicy.from_settings(settings)
    except ValueError as err:  # names RTMH_ALLOWED_TARGETS and the bad entry
        raise _fail(str(err), 2) from None


def run_notify_test(
    url: str,
    channel_name: str,
    *,
    console: Console | None = None,
    public_url: str | None = None,
    targets: TargetPolicy | None = None,
) -> ChannelTestResult:
    """Load ``channel_name``, send it ``Notification.test``, print the answer (to ``console``,
    default stdout; errors to stderr). ``public_url``: the dashboard's, default Settings';
    ``targets``: where the channel may connect, default the strict policy (no allow-list)."""
    out = console or Console()
    err = console or _err
    try:
        with connect(url) as conn:
            row = outbox.load_channel(conn, channel_name)
            names = outbox.channel_names(conn) if row is None else []
    except DatabaseUnavailable as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return ChannelTestResult(1, None, None)
    except Exception as exc:  # e.g. the schema is missing
        text = " ".join(str(exc).split())
        err.print(
            f"[bold red]error:[/] cannot read channels from {describe_url(url)}: {escape(text)} "
            "(did `rtmh migrate` run?)",
            highlight=False,
            soft_wrap=True,
        )
        return ChannelTestResult(1, None, None)
    if row is None:
        known = ", ".join(names) if names else "none are configured"
        err.print(
            f"[bold red]error:[/] no channel named {escape(repr(channel_name))}; "
            f"known channels: {escape(known)}",
            highlight=False,
            soft_wrap=True,
        )
        return ChannelTestResult(1, None, None)
    try:
        channel = Channel.from_row(row.as_mapping())
    except ChannelConfigError as exc:  # names the field, never a value
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return ChannelTestResult(1, None, None)
    base = public_url or Settings.model_fields["public_url"].default
    note = "" if row.enabled else " [yellow](disabled: the notifier does not use it)[/]"
    out.print(
        f"sending a test notification to channel [bold]{escape(channel.name)}[/] "
        f"({channel.type}){note}",
        highlight=False,
    )
    started = time.monotonic()
    result = asyncio.run(send_test(channel, targets or TargetPolicy(), public_url=base))
    seconds = time.monotonic() - started
    status = f"HTTP {result.http_status}" if result.http_status is not None else channel.type
    if result.ok:
        out.print(
            f"[green]delivered[/]: {escape(status)} in {seconds * 1000:.0f} ms", highlight=False
        )
    else:
        kind = "temporary" if result.retryable else "permanent"
        out.print(
            f"[red]failed[/] ({kind}) after {seconds * 1000:.0f} ms: {escape(result.error or '')}",
            highlight=False,
            soft_wrap=True,
        )
    if result.response_excerpt:
        out.print("receiver answered:", highlight=False)
        out.print(escape(result.response_excerpt), highlight=False, soft_wrap=True)
    return ChannelTestResult(0 if result.ok else 1, channel, result, seconds)


# --- rtmh notifier --------------------------------------------------------------------------


def run_notifier(settings: Settings) -> None:
    """`rtmh notifier`: deliver the outbox until SIGTERM/SIGINT.

    Tuning comes from the settings (RTMH_NOTIFY_*, RTMH_PUBLIC_URL: see ``rtmh.config``).
    Raises ``typer.Exit`` with a one-line message when it cannot start.
    """
    url = _require_url(settings)
    try:
        opts = NotifierOptions.from_settings(settings)
    except ValueError as err:  # RTMH_ALLOWED_TARGETS: names the bad entry
        raise _fail(str(err), 2) from None
    try:
        with connect(url) as conn:
            ready = outbox.schema_ready(conn)
    except DatabaseUnavailable as err:
        raise _fail(str(err)) from None
    if not ready:
        raise _fail(f"{describe_url(url)} has no alert_notifications table: run `rtmh migrate`")
    if settings.metrics_port:
        _start_metrics(settings.metrics_port)
    log.info(
        "notifier %s delivering from %s (concurrency %d)",
        opts.notifier_id,
        describe_url(url),
        opts.concurrency,
    )
    serve(url, opts)


def _start_metrics(port: int) -> None:
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as err:
        log.warning("Prometheus /metrics not started on port %d: %s", port, err)
    else:
        log.info("Prometheus metrics on http://0.0.0.0:%d/metrics", port)
