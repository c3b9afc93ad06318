"""/api/v1/notifications: the notifications log, newest first (rtmh.service.notification_log)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from rtmh.api.auth import requester
from rtmh.api.problems import responses
from rtmh.api.schemas import NotificationLogEntry, PageOf
from rtmh.service import notification_log as service
from rtmh.service.tokens import Principal

router = APIRouter(
    prefix="/notifications", tags=["notifications"], responses=responses(401, 403, 422, 429)
)

Who = Annotated[Principal, Depends(requester)]


@router.get(
    "",
    summary="every notification queued, newest first, with its outcome",
    response_model=PageOf[NotificationLogEntry],
)
async def list_notifications(
    request: Request,
    _who: Who,
    channel: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    status: Annotated[
        list[service.Status] | None, Query(description="repeatable: sent, failed, dead, …")
    ] = None,
    incident_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Any:
    async with request.app.state.pool.connection() as conn:
        page = await service.list_notifications(
            conn,
            channel=channel,
            statuses=list(status) if status else None,
            incident_id=incident_id,
            limit=limit,
            cursor=cursor,
        )
    return {"items": page.items, "next_cursor": page.next_cursor}
