"""`rtmh up`: start everything in order, watch it, stop it in reverse order.

Order of start: PostgreSQL (embedded unless POSTGRES_URL), broker (embedded unless
KAFKA_BOOTSTRAP_SERVERS), migrations, the demo receiver, then the worker and the notifier as
supervised children, then the demo traffic. Stop is the reverse: producers first so the worker
can finish its last batch, then the worker, the notifier, the broker and the database.
The API (`rtmh api`) is a third supervised child; `up` makes an admin token for the local user
and leaves it, with the database's URL, in private files for the other commands
(:mod:`rtmh.up.running`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import psycopg
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from rtmh import simulate as sim
from rtmh.api.serve import PortBusy, bind
from rtmh.config import Settings
from rtmh.db.connect import DatabaseUnavailable, connect, describe_url, normalise_url
from rtmh.db.migrate import apply_pending
from rtmh.embedded.broker import EmbeddedBroker
from rtmh.embedded.files import private_dir
from rtmh.embedded.log_roll import LogRoller, RollOutcome, RollPolicy
from rtmh.embedded.postgres import EmbeddedPostgres
from rtmh.embedded.process import read_live_pid, write_pid_file
from rtmh.kafka.client import (
    MessageReader,
    ensure_topics,
    make_producer,
    produce_waiting,
    wait_for_broker,
)
from rtmh.records import Kind
from rtmh.service.errors import NotFound
from rtmh.service.sessions import CODE_TTL, create_login_code, login_link
from rtmh.service.tokens import create_token, revoke_token
from rtmh.up import demo as story
from rtmh.up import view
from rtmh.up.broker_watch import BrokerWatch
from rtmh.up.running import LOCAL_TOKEN_NAME, RunningHub, announce, withdraw
from rtmh.up.supervisor import Child, ChildFailed, Supervisor

log = logging.getLogger(__name__)

#: how long `up` lets the worker store the last messages before it stops it
STOP_CATCH_UP_S = 15.0


class UpError(Exception):
    """`up` cannot start or had to stop; one line saying why and what to do."""


@dataclass
class UpOptions:
    demo: bool = False
    duration: float | None = None
    fresh: bool = False
    #: where the API listens; None: RTMH_API_HOST / RTMH_API_PORT
    host: str | None = None
    port: int | None = None


class Traffic:
    """The demo story produced from a thread inside `up`."""

    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.bootstrap = bootstrap
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        #: messages the broker acknowledged / refused (delivery reports)
        self.delivered = 0
        self.failed = 0

    def _run(self) -> None:
        topics = {k.value: self.settings.topic(k.value) for k in Kind}
        # owned by this thread alone: freed when it ends, so the producer's connections close
        # before the broker is asked to stop (an open client kept tansu's shutdown waiting 5 s)
        producer = make_producer(self.bootstrap, **{"linger.ms": story.DEMO_LINGER_MS})

        def delivered(err: object, _msg: object) -> None:
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1

        def produce(kind: str, key: bytes, value: bytes) -> None:
            produce_waiting(producer, topics[kind], value, key, on_delivery=delivered)

        sim.run(
            produce,
            lambda: producer.poll(0),
            sim.Traffic(story.story()),
            story.DEMO_RATE,
            float("inf"),
            stop=self.stop_event.is_set,
        )
        producer.flush(10)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(15)


class Hub:
    def __init__(self, settings: Settings, options: UpOptions, console: Console):
        self.settings = settings
        self.options = options
        self.console = console
        self.interactive = console.is_terminal
        self.run_dir = settings.data_dir / "run"
        self.stop_requested = threading.Event()
        self.postgres_url = ""
        self.bootstrap = ""
        #: the embedded broker, when `up` started one (None with KAFKA_BOOTSTRAP_SERVERS)
        self.embedded: EmbeddedBroker | None = None
        self.roller: LogRoller | None = None

    def say(self, line: str) -> None:
        """One line of `up`'s output; its text is never markup ("[medium]" stays visible)."""
        if self.interactive:
            stamp = time.strftime("%H:%M:%S")
            self.console.print(f"[dim]{stamp}[/] {escape(line)}", highlight=False)
        else:
            print(view.stamp(line), flush=True)

    # --- start --------------------------------------------------------------------------------
    def _claim_data_dir(self) -> None:
        # private: logs and the database can quote notification secrets
        private_dir(self.settings.data_dir)
        private_dir(self.run_dir)
        lock = self.run_dir / "up.pid"
        other = read_live_pid(lock)
        if other is not None and other.pid != os.getpid():
            raise UpError(
                f"another rtmh up (pid {other.pid}) is using RTMH_DATA_DIR="
                f"{self.settings.data_dir}; stop it first or set another RTMH_DATA_DIR"
            )
        write_pid_file(lock, os.getpid())

    def _database(self, stack: ExitStack) -> str:
        if self.settings.postgres_url:
            try:
                connect(self.settings.postgres_url).close()
            except DatabaseUnavailable as err:
                raise UpError(str(err)) from None
            return self.settings.postgres_url
        try:
            server = EmbeddedPostgres(self.settings.data_dir / "postgres")
            if self.options.fresh and server.remove():
                self.say(f"--fresh: removed the database of {server.root}")
            url = server.start()
        except (RuntimeError, OSError) as err:
            raise UpError(f"embedded PostgreSQL did not start: {err}") from None
        stack.callback(self._step, "PostgreSQL stopped", server.stop)
        self.say(f"embedded PostgreSQL ready at {describe_url(url)} (data in {server.pgdata})")
        return url

    def _broker(self, stack: ExitStack) -> str:
        if self.settings.kafka_bootstrap_servers:
            try:
                wait_for_broker(self.settings.kafka_bootstrap_servers, timeout=10)
            except Exception:
                raise UpError(
                    f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS="
                    f"{self.settings.kafka_bootstrap_servers} (is the broker running?)"
                ) from None
            return self.settings.kafka_bootstrap_servers
        server = EmbeddedBroker(self.run_dir, gated=True)
        bootstrap = server.start()
        stack.callback(self._step, "broker stopped", server.stop)
        self.embedded = server
        self.say(f"embedded Kafka-compatible broker (tansu) ready at {bootstrap}")
        return bootstrap

    def _bound_broker_log(self, stack: ExitStack) -> None:
        """Roll the embedded broker's topics whenever its log grows past the bound."""
        if self.embedded is None or self.embedded.gate is None:
            return
        self.roller = LogRoller(
            self.embedded.gate,
            self.bootstrap,
            self.postgres_url,
            self.settings.group_id,
            list(self.settings.topic_kinds()),
            self.settings.partitions,
            RollPolicy(max_batches=self.settings.embedded_broker_max_batches),
            self._on_roll,
        )
        self.roller.start()
        # registered after the worker: stops before it, so no roll waits on a stopped worker
        stack.callback(self.roller.stop)

    def _on_roll(self, outcome: RollOutcome) -> None:
        self.say(outcome.line())

    def _step(self, done: str, action: Callable[[], None]) -> None:
        action()
        self.say(done)

    def _child_env(self, name: str, api_url: str) -> dict[str, str]:
        """Every setting `up` was given (flags included), on the servers it started."""
        own: dict[str, object] = {
            "postgres_url": self.postgres_url,
            "kafka_bootstrap_servers": self.bootstrap,
        }
        if "public_url" not in self.settings.model_fields_set:
            # notifications link to this dashboard's incident pages, wherever the API listens
            own["public_url"] = api_url
        if name != "worker":
            # one port, one process: --metrics-port serves the worker's /metrics (two children
            # on one port would fight over it and the loser would be restarted for ever)
            own["metrics_port"] = 0
        if name == "notifier" and self.options.demo:
            # the demo receiver listens on loopback, which the notifier refuses by default
            own["allowed_targets"] = story.notifier_allowed_targets(self.settings)
        return {**os.environ, **self.settings.model_copy(update=own).to_env()}

    def _api_address(self) -> tuple[str, int]:
        host = self.options.host or self.settings.api_host
        wanted = self.options.port if self.options.port is not None else self.settings.api_port
        try:
            # bound and released: the child binds it again at once (SO_REUSEADDR)
            with bind(host, wanted) as sock:
                port = int(sock.getsockname()[1])
        except PortBusy as err:
            raise UpError(str(err).replace("--port", "rtmh up --port")) from None
        return host, port

    def _children(self, stack: ExitStack, supervisor: Supervisor) -> str:
        """Start worker, notifier and API; returns the API's URL."""
        logs = private_dir(self.settings.data_dir / "logs")
        host, port = self._api_address()
        shown = f"[{host}]" if ":" in host else host
        api_url = f"http://{shown}:{port}"
        argv = {
            "worker": ["worker"],
            "notifier": ["notifier"],
            "api": ["api", "--host", host, "--port", str(port)],
        }
        for name, args in argv.items():
            supervisor.add(
                Child(
                    name,
                    [sys.executable, "-m", "rtmh.cli", *args],
                    self._child_env(name, api_url),
                    logs / f"{name}.log",
                    self.run_dir / f"{name}.pid",
                )
            )
        # the stack unwinds last-in first-out: the API first, then the worker (finishing its
        # batch), then the notifier
        for name in ("notifier", "worker", "api"):
            stack.callback(self._step, f"{name} stopped", partial(supervisor.stop, name))
        return api_url

    def _announce_api(self, stack: ExitStack, api_url: str) -> None:
        """A fresh admin token for the local user, in a private file next to the hub's URL."""
        token, code = asyncio.run(_local_admin_token(self.postgres_url))
        token_file = announce(self.run_dir, RunningHub(self.postgres_url, api_url), token)
        stack.callback(withdraw, self.run_dir)
        self.say(f"API at {api_url}/api/v1 (interactive docs at {api_url}/docs)")
        self.say(
            f'admin token for this user in {token_file}; e.g. curl -H "Authorization: Bearer '
            f'$(cat {token_file})" {api_url}/api/v1/incidents'
        )
        # the link holds a one-time code, never the token (rtmh.service.sessions)
        self.say(f"dashboard at {api_url}/")
        self.say(
            f"sign in with this link (it works once, within "
            f"{int(CODE_TTL.total_seconds() // 60)} min; rtmh dashboard prints a new one): "
            f"{login_link(api_url, code)}"
        )

    # --- run ----------------------------------------------------------------------------------
    def run(self) -> None:
        supervisor = Supervisor(self.say)
        with ExitStack() as stack:
            self._claim_data_dir()
            stack.callback((self.run_dir / "up.pid").unlink, missing_ok=True)
            self.postgres_url = self._database(stack)
            self.bootstrap = self._broker(stack)
            with connect(self.postgres_url, autocommit=True) as conn:
                applied = apply_pending(conn)
            self.say(f"migrations: {len(applied)} applied" if applied else "migrations: up to date")
            ensure_topics(
                self.bootstrap, list(self.settings.topic_kinds()), self.settings.partitions
            )
            if self.options.demo:
                receiver = story.DemoReceiver(self._on_delivery)
                receiver.start()
                stack.callback(receiver.stop)
                with connect(self.postgres_url, autocommit=True) as conn:
                    story.configure(conn, receiver.url, receiver.secret)
                self.say(f"demo webhook receiver listening at {receiver.url} (HMAC-signed)")
            api_url = self._children(stack, supervisor)
            self._announce_api(stack, api_url)
            self._bound_broker_log(stack)
            traffic: Traffic | None = None
            if self.options.demo:
                traffic = Traffic(self.settings, self.bootstrap)
                traffic.start()
                stack.callback(self._stop_traffic, traffic)
                self.say(
                    f"demo traffic: {story.DEMO_RATE:.0f} messages/s; story: "
                    f"{story.story().description} (repeats every {story.STORY_PERIOD:.0f} s)"
                )
            self.say(
                f"RTMH is up. PostgreSQL: {describe_url(self.postgres_url)}; Kafka: "
                f"{self.bootstrap}. Press Ctrl-C to stop."
            )
            self._watch(supervisor, traffic)
            self.say("stopping: producers, API, worker, notifier, broker, database")

    def _stop_traffic(self, traffic: Traffic) -> None:
        traffic.stop()
        if self.roller is not None:
            # the worker stops next: let it store what the demo sent first (the gate knows
            # where the logs end), so a stopped hub holds every message it acknowledged
            try:
                missing = self.roller.wait_for_commits(STOP_CATCH_UP_S)
            except Exception as err:  # the broker or PostgreSQL is gone: stop anyway
                missing = [str(err)]
            if missing:
                self.say(f"stopping with messages not yet stored: {', '.join(missing[:3])}")
        # `rtmh bench up-soak` compares this count with what PostgreSQL holds
        self.say(
            f"demo traffic stopped: {traffic.delivered:,} messages delivered, "
            f"{traffic.failed:,} failed"
        )

    def _on_delivery(self, d: story.Delivery) -> None:
        check = "signature ok" if d.signature_ok else "BAD SIGNATURE"
        self.say(f"webhook received: {d.event} '{d.title}' ({d.status}), {check}")

    def _watch(self, supervisor: Supervisor, traffic: Traffic | None) -> None:
        deadline = time.monotonic() + self.options.duration if self.options.duration else None
        # the embedded broker's gate knows its logs' ends; a reader is for a Kafka's watermarks
        reader = MessageReader(self.bootstrap) if self.embedded is None else None
        pid = self.embedded.pid if self.embedded is not None else None
        watch = BrokerWatch(pid) if pid is not None else None
        last: view.Snapshot | None = None
        last_summary = 0.0
        headline = "RTMH up" + (" --demo" if self.options.demo else "")
        live: Live | _NoLive = (
            Live(console=self.console, refresh_per_second=2) if self.interactive else _NoLive()
        )
        try:
            with connect(self.postgres_url, autocommit=True) as conn, live:
                while not self.stop_requested.is_set():
                    if deadline is not None and time.monotonic() >= deadline:
                        self.say(f"--duration {self.options.duration:.0f} s reached")
                        return
                    try:
                        supervisor.check()
                    except ChildFailed as err:
                        raise UpError(str(err)) from None
                    snap = view.read_snapshot(conn, self.settings.group_id)
                    self._broker_figures(snap, reader, watch)
                    view.derive_rates(last, snap)
                    if self.interactive:
                        live.update(view.render(snap, headline))
                    for line in view.changes(last, snap):
                        self.say(line)
                    if not self.interactive and snap.at - last_summary >= 10:
                        last_summary = snap.at
                        self.say(view.summary(snap))
                    last = snap
                    self.stop_requested.wait(1.0)
        finally:
            if reader is not None:
                reader.close()

    def _broker_figures(
        self, snap: view.Snapshot, reader: MessageReader | None, watch: BrokerWatch | None
    ) -> None:
        """What the broker holds and costs. The embedded broker's gate knows its logs' ends;
        asking tansu for watermarks would list every batch of every partition, each second."""
        gate = self.embedded.gate if self.embedded is not None else None
        if gate is None:
            snap.high = self._high_watermarks(reader) if reader is not None else None
            return
        stats = gate.stats()
        snap.high = sum(c.end for c in stats.logs.values())
        snap.acknowledged = stats.acknowledged
        if watch is None:
            return
        for line in watch.sample(snap.at):
            log.warning(line)
        load = watch.load
        if load is not None:
            snap.broker = view.BrokerLine(
                load.rss, load.cpu_percent, stats.max_batches, stats.size, stats.rolls
            )

    def _high_watermarks(self, reader: MessageReader) -> int | None:
        total = 0
        for kind in Kind:
            topic = self.settings.topic(kind.value)
            for partition in range(self.settings.partitions):
                marks = reader.watermarks(topic, partition)
                if marks is None:
                    return None
                total += marks[1]
        return total


class _NoLive:
    """Stands in for rich's Live when stdout is not a terminal."""

    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _renderable: object) -> None:
        return None


class _SayHandler(logging.Handler):
    """Log records of `up`'s own process as lines of its output, through the same console and
    in the same format as the view's lines (level shown when it is not INFO)."""

    def __init__(self, say: Callable[[str], None]):
        super().__init__()
        self.say = say
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.say(line if record.levelno == logging.INFO else f"{record.levelname} {line}")
        except Exception:
            self.handleError(record)


@contextmanager
def _logging_through(say: Callable[[str], None]) -> Iterator[None]:
    """Route the root logger to ``say`` while `up` runs (rtmh.cli set it up on stderr)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_SayHandler(say)]
    try:
        yield
    finally:
        root.handlers = saved


async def _local_admin_token(postgres_url: str) -> tuple[str, str]:
    """The local user's new admin token, and a one-time sign-in code for the dashboard."""
    async with await psycopg.AsyncConnection.connect(
        normalise_url(postgres_url), autocommit=True
    ) as conn:
        with contextlib.suppress(NotFound):
            await revoke_token(conn, LOCAL_TOKEN_NAME)
        token, _info = await create_token(conn, LOCAL_TOKEN_NAME, "admin")
        code = await create_login_code(conn, LOCAL_TOKEN_NAME)
    return token, code.text


def run_up(settings: Settings, options: UpOptions, console: Console) -> None:
    hub = Hub(settings, options, console)

    def request_stop(signum: int, _frame: object) -> None:
        hub.stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with _logging_through(hub.say):
        hub.run()
