"""rtmh.embedded.gate's shared state: what a roll forgets, and which fetches it refuses."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from rtmh.embedded import gate
from rtmh.embedded.gate import LogCounts, _State
from rtmh.embedded.process import free_port
from tests.unit.test_frames import fetch_request

OLD, NEW, OTHER = b"o" * 16, b"n" * 16, b"x" * 16


def test_a_roll_forgets_its_topics_logs_and_refuses_their_old_ids() -> None:
    state = _State()
    state.logs = {("a", 0): LogCounts(10, 2, 100), ("b", 0): LogCounts(5, 1, 50)}
    assert None is state.rolled_fetch(fetch_request(16, {OLD: [0]}))  # nothing rolled yet
    state.forget_logs({"a"}, [OLD])
    assert set(state.logs) == {("b", 0)} and state.rolls == 1
    assert None is not state.rolled_fetch(fetch_request(16, {OLD: [0]}))
    assert None is not state.rolled_fetch(fetch_request(13, {NEW: [0], OLD: [1]}))
    assert None is state.rolled_fetch(fetch_request(16, {NEW: [0], OTHER: [1]}))
    assert None is state.rolled_fetch(b"\x00\x01\x00\x10")  # unreadable: relayed


def test_old_ids_are_kept_up_to_a_bound_oldest_out_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate, "ROLLED_IDS_KEPT", 4)
    state = _State()
    ids = [bytes([i]) * 16 for i in range(6)]
    for pair in (ids[0:2], ids[2:4], ids[4:6]):
        state.forget_logs({"a"}, pair)
    assert list(state.rolled_ids) == ids[2:]
    assert None is state.rolled_fetch(fetch_request(16, {ids[0]: [0]}))


def test_a_connection_opened_while_all_are_closed_is_closed_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sever() closes the links it knows; one whose upstream connection was still being opened
    at that moment was not among them, and would keep the client's old view of the topics."""
    upstream = socket.create_server(("127.0.0.1", 0))
    opening, may_open = threading.Event(), threading.Event()
    real_open = asyncio.open_connection

    async def slow_open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opening.set()
        while not may_open.is_set():
            await asyncio.sleep(0.001)
        return await real_open(host, port)

    monkeypatch.setattr(gate.asyncio, "open_connection", slow_open)
    g = gate.Gate(upstream.getsockname()[1], free_port())
    g.start()
    client = socket.create_connection(("127.0.0.1", g.port))
    try:
        assert opening.wait(10)
        g.sever()
        may_open.set()
        client.settimeout(30)  # a bound for the failure only: a closed link answers at once
        assert client.recv(1) == b""
    finally:
        client.close()
        g.stop()
        upstream.close()
