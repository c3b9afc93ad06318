"""A real `rtmh api` process on a migrated test database, and tokens of each scope for it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from rtmh.service.tokens import create_token

from .ingest_support import wait_for

_READY = re.compile(r"API listening on (http://\S+)")
PROBLEM = "application/problem+json"


def expect_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    """The RFC 9457 body of a refusal, checked: status, media type, a detail, and (given) the
    first field it names."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"], body
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


@dataclass
class Api:
    url: str
    db_url: str
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def client(self, scope: str | None = "admin", **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def make_token(db_url: str, name: str, scope: str) -> str:
    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            token, _ = await create_token(conn, name, scope)
        return token

    return asyncio.run(run())


@contextmanager
def running_api(
    db_url: str,
    workdir: Path,
    env_extra: dict[str, str] | None = None,
    *,
    token_prefix: str = "test",
    wait_ready: bool = True,
) -> Iterator[Api]:
    log = workdir / "api.log"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    env.update({"POSTGRES_URL": db_url, "RTMH_DATA_DIR": str(workdir / "data")})
    env.update(env_extra or {})
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "rtmh.cli", "api", "--port", "0"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    api = Api(url="", db_url=db_url, log=log, process=process)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"rtmh api exited: {api.log_text()}")
            found = _READY.search(api.log_text())
            if found:
                api.url = found.group(1)
            return bool(found)

        wait_for(ready, 60, "rtmh api to listen")
        for scope in ("read", "write", "admin"):
            api.tokens[scope] = make_token(db_url, f"{token_prefix}-{scope}", scope)

        def answers() -> bool:
            try:
                return httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        if wait_ready:
            wait_for(answers, 60, "rtmh api to be ready")
        yield api
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def insert_incident(
    db_url: str, *, rule: str | None = None, status: str = "open", **extra: Any
) -> str:
    """An incident row as the rules engine writes one (its rule, fingerprint and metadata)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rule_id = None
        if rule is not None:
            found = conn.execute("SELECT id FROM alert_rules WHERE name = %s", (rule,)).fetchone()
            assert found is not None
            rule_id = found[0]
        key = extra.pop("window_key", "checkout")
        row = conn.execute(
            "INSERT INTO incidents (title, severity, status, source, rule_id, window_key, "
            "fingerprint, last_value, peak_value, threshold, metadata, created_at) "
            "VALUES (%s, %s, %s, 'error_rate_monitor', %s, %s, %s, 0.3, 0.4, 0.05, %s, %s) "
            "RETURNING id::text",
            (
                f"error rate on {key}",
                extra.pop("severity", "high"),
                status,
                rule_id,
                key,
                f"{rule_id}:{key}:{uuid.uuid4().hex[:6]}",
                Jsonb({"rule_name": rule, "trigger": {"value": 0.3, "threshold": 0.05}}),
                extra.pop("created_at", datetime.now(UTC)),
            ),
        ).fetchone()
    assert row is not None
    return str(row[0])
