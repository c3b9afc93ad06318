"""What one incident change queues for the notifier: one outbox row per channel of the rule.

Pure, shared by the rules engine (automatic changes) and :mod:`rtmh.service.incidents` (a
person's status change): both write the rows this returns with the ``insert_notification`` query
of db/queries/rules.sql, in the transaction that changed the incident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rtmh.records import IncidentSnapshot
from rtmh.rules.lifecycle import NotifyEvent, idempotency_key, incident_title
from rtmh.rules.model import IncidentState, Rule
from rtmh.rules.silences import Silence, matching_silence


@dataclass(frozen=True, slots=True)
class QueuedNotification:
    """One alert_notifications row: status 'suppressed' when a silence mutes it."""

    channel: str
    event: NotifyEvent
    idempotency_key: str
    payload: dict[str, Any]
    suppressed_by: int | None

    @property
    def status(self) -> str:
        return "pending" if self.suppressed_by is None else "suppressed"


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def snapshot(rule: Rule, state: IncidentState, reason: str) -> IncidentSnapshot:
    """The incident as the notification shows it (the notifier renders this, not the row)."""
    assert state.id is not None
    return IncidentSnapshot(
        id=state.id,
        title=incident_title(rule, state.window_key),
        severity=rule.severity,
        status=state.status,
        source=rule.source,
        window_key=state.window_key,
        rule_name=rule.name,
        first_seen=datetime.fromtimestamp(state.first_seen, UTC),
        last_seen=datetime.fromtimestamp(state.last_seen, UTC),
        last_value=state.last_value,
        threshold=rule.threshold,
        condition=rule.condition,
        peak_value=state.peak_value,
        resolved_at=_when(state.resolved_at),
        description=rule.description,
        runbook_url=rule.runbook_url,
        metric_type=rule.metric_type,
        metadata={"reason": reason},
    )


def queue(
    rule: Rule,
    state: IncidentState,
    event: NotifyEvent,
    seq: int,
    reason: str,
    silences: Iterable[Silence],
    now: datetime,
) -> list[QueuedNotification]:
    """The rows of one notification event of ``state`` (a stored incident), one per channel."""
    if not rule.channels:
        return []
    assert state.id is not None
    payload = {"incident": snapshot(rule, state, reason).to_dict()}
    silence = matching_silence(silences, rule.name, state.window_key, rule.severity, now)
    return [
        QueuedNotification(
            channel=channel,
            event=event,
            idempotency_key=idempotency_key(state.id, channel, event, seq),
            payload=payload,
            suppressed_by=silence,
        )
        for channel in rule.channels
    ]
