"""Wording every channel shares: the headline, how a value reads against its threshold, and
the exact JSON bytes that are signed and sent.

Pure (no I/O, no clock), like every ``render_*`` function next to its channel: each payload shape
is unit-tested without a network, and the ``deliver_*`` functions only move bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rtmh.records import IncidentSnapshot, Notification, finite, value_vs_threshold


def format_value(value: float | None) -> str:
    """Four significant digits: enough to compare with a threshold, short enough to read."""
    number = finite(value)
    return "n/a" if number is None else f"{number:.4g}"


def value_summary(incident: IncidentSnapshot) -> str:
    """'0.1234 > 0.05' while the condition holds; 'recovered: 0.01, threshold > 0.05' after."""
    threshold = None if incident.threshold is None else format_value(incident.threshold)
    return value_vs_threshold(
        format_value(incident.last_value), incident.condition, threshold, live=incident.live
    )


def headline(notification: Notification) -> str:
    """'[HIGH] open: high_error_rate on checkout': the one line every channel leads with."""
    incident = notification.incident
    return (
        f"[{incident.severity.upper()}] {notification.event}: {incident.rule} on {incident.service}"
    )


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed are the bytes that are sent."""
    return json.dumps(
        payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
    ).encode("utf-8")


def cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: receivers reject longer values."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str) -> str:
    """Header values must not fold into new headers (header injection through a rule name)."""
    return " ".join(text.split())
