"""The detection benchmark's traffic: `rtmh simulate`'s generator with a burst scenario, watched
line by line so the benchmark knows at which line of a burst the rule's condition became true."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from rtmh import simulate as sim
from rtmh.bench.detect.model import TICK_S, Burst, DetectConfig, RuleParams
from rtmh.kafka.client import produce_waiting
from rtmh.windows.assign import pane_start


class PaneCounts:
    """Log lines and errors per service and pane, as produced: the rule's verdict recomputed
    exactly as the engine judges the newest windows."""

    def __init__(self, services: int, rule: RuleParams, size: int, slide: int):
        self.services = services
        self.rule = rule
        self.size = size
        self.slide = slide
        #: pane start -> per service [lines, errors]
        self.panes: dict[int, list[list[int]]] = {}

    def add(self, service: int, pane: int, error: bool) -> None:
        counts = self.panes.get(pane)
        if counts is None:
            counts = [[0, 0] for _ in range(self.services)]
            self.panes[pane] = counts
        counts[service][0] += 1
        counts[service][1] += error

    def condition(self, service: int, pane: int) -> tuple[bool, tuple[int, int, int]] | None:
        """The rule's verdict on ``service`` with ``pane`` the newest: the newest window holding
        at least min_count lines decides; None without one."""
        lines = errors = 0
        for start in range(pane, pane - self.size, -self.slide):
            counts = self.panes.get(start)
            if counts is not None:
                lines += counts[service][0]
                errors += counts[service][1]
            if lines >= self.rule.min_count and lines > 0:
                return errors / lines > self.rule.threshold, (start, lines, errors)
        return None


class BurstTraffic:
    """Paced background traffic with the bursts, produced to ``topics``; records on each burst
    when its first line, first error and condition-true line were handed to the producer."""

    def __init__(
        self,
        config: DetectConfig,
        topics: dict[str, str],
        producer: Any,
        rule: RuleParams,
        size: int,
        slide: int,
        bursts: list[Burst],
        *,
        services: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        phases: Sequence[sim.Phase] = (),
    ):
        """``services`` (default: the config's names) with their ``weights`` (shares of the
        requests, equal by default); ``phases``: more phases after the bursts' own."""
        self.config = config
        self.topics = topics
        self.producer = producer
        self.slide = slide
        self.bursts = bursts
        names = list(services) if services is not None else config.service_names()
        self.index = {name: i for i, name in enumerate(names)}
        self.counts = PaneCounts(len(names), rule, size, slide)
        plan = sim.bursts(
            [(b.start, b.end, b.service) for b in bursts],
            error_ratio=config.burst_errors,
            rate_factor=config.burst_factor,
            base_error_ratio=config.base_errors,
        )
        #: id of a burst's phase -> the burst (the generator hands back the very phase objects)
        self.by_phase = {id(p): b for p, b in zip(plan.phases, bursts, strict=True)}
        plan = replace(plan, phases=plan.phases + tuple(phases))
        self.traffic = sim.Traffic(
            plan, tuple(names), seed=config.seed, on_log=self._observe, weights=weights
        )
        self.produced = 0
        self.failed = 0
        self.first_error_note: str | None = None
        self.started_wall = 0.0

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            self.first_error_note = self.first_error_note or str(err)

    def _produce(self, kind: str, key: bytes, value: bytes) -> None:
        produce_waiting(self.producer, self.topics[kind], value, key, self._on_delivery)
        self.produced += 1

    def _observe(self, line: sim.LogLine) -> None:
        """Called just before ``line`` is handed to the producer: counts it, and for a burst
        line records the clocks of the burst's first line, first error and trigger."""
        at = time.time()
        si = self.index[line.service]
        pane = pane_start(line.ts, self.slide)
        self.counts.add(si, pane, line.error)
        burst = None if line.phase is None else self.by_phase.get(id(line.phase))
        if burst is None:
            return
        burst.lines += 1
        burst.errors += line.error
        if burst.started_at is None:
            burst.started_at = at
        if line.error and burst.first_error_at is None:
            burst.first_error_at = at
            burst.first_error_request, burst.first_error_ts = line.request_id, line.ts
        if burst.first_error_at is not None and burst.trigger_at is None:
            verdict = self.counts.condition(si, pane)
            if verdict is not None and verdict[0]:
                burst.trigger_at, burst.trigger_request, burst.trigger_ts = (
                    at,
                    line.request_id,
                    line.ts,
                )
                burst.trigger_window = verdict[1]

    def first_message(self) -> None:
        """One request's messages, before the traffic starts: the worker's first commit."""
        for kind, key, value in self.traffic.messages(0.0, 1):
            self._produce(kind, key, value)

    def burst_at(self, t: float) -> Burst | None:
        for b in self.bursts:
            if b.start <= t < b.end:
                return b
            if b.start > t:
                return None
        return None

    def _mark_ended(self, t: float) -> None:
        for b in self.bursts:
            if b.ended_at is None and b.started_at is not None and t >= b.end:
                b.ended_at = time.time()

    def run(self, until: Callable[[float], bool], on_tick: Callable[[float], None]) -> float:
        """Produce until ``until(t)``; ``on_tick(t)`` four times a second; returns the seconds
        it ran."""
        next_ui = 0.0

        def tick(t: float, _result: sim.RunResult) -> None:
            nonlocal next_ui
            self._mark_ended(t)
            if t >= next_ui:
                next_ui = t + 0.25
                on_tick(t)

        def first_until(t: float) -> bool:
            if not self.started_wall:
                self.started_wall = time.time() - t
            return until(t)

        result = sim.run(
            self._produce,
            lambda: self.producer.poll(0),
            self.traffic,
            self.config.rate,
            float("inf"),
            on_tick=tick,
            until=first_until,
            tick=TICK_S,
        )
        return result.seconds
