"""/api/v1/incidents: the list, one incident, and the on-call actions (rtmh.service.incidents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from rtmh.api.auth import requester
from rtmh.api.problems import responses
from rtmh.api.schemas import (
    ActionBody,
    AssignBody,
    Incident,
    IncidentDetail,
    IncidentStatus,
    NoteBody,
    PageOf,
    Severity,
)
from rtmh.service import incidents as service
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/incidents", tags=["incidents"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]


@router.get("", summary="incidents, newest first", response_model=PageOf[Incident])
async def list_incidents(
    request: Request,
    _who: Who,
    status: Annotated[list[IncidentStatus] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    service_name: Annotated[
        str | None, Query(alias="service", max_length=500, description="window key")
    ] = None,
    rule: Annotated[str | None, Query(max_length=500, description="rule name")] = None,
    source: Annotated[str | None, Query(max_length=500)] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Any:
    filters = service.IncidentFilter(
        status=list(status) if status else None,
        severity=list(severity) if severity else None,
        service=service_name,
        rule=rule,
        source=source,
        since=since,
        until=until,
    )
    async with request.app.state.pool.connection() as conn:
        page = await service.list_incidents(conn, filters, limit=limit, cursor=cursor)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get(
    "/{incident_id}",
    summary="one incident: why it fired, its timeline and notifications",
    response_model=IncidentDetail,
    responses=responses(404),
)
async def get_incident(request: Request, _who: Who, incident_id: str) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.get_incident(conn, incident_id)


def _action(name: str, summary: str) -> None:
    async def act(
        request: Request, who: Who, incident_id: str, body: ActionBody | None = None
    ) -> Any:
        message = body.message if body else None
        async with request.app.state.pool.connection() as conn:
            return await service.change_status(conn, incident_id, name, who.name, message)

    act.__name__ = f"{name}_incident"
    router.post(
        f"/{{incident_id}}/{name}",
        summary=summary,
        response_model=IncidentDetail,
        responses=responses(404, 409),
    )(act)


_action("acknowledge", "take it: open -> investigating")
_action("resolve", "mark it resolved")
_action("close", "close it for good")
_action("reopen", "reopen a resolved incident")


@router.post(
    "/{incident_id}/assign",
    summary="give it to someone (null: to nobody)",
    response_model=IncidentDetail,
    responses=responses(404),
)
async def assign(request: Request, who: Who, incident_id: str, body: AssignBody) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.assign(conn, incident_id, who.name, body.assignee)


@router.post(
    "/{incident_id}/notes",
    summary="add a note to the timeline",
    response_model=IncidentDetail,
    responses=responses(404),
)
async def add_note(request: Request, who: Who, incident_id: str, body: NoteBody) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.add_note(conn, incident_id, who.name, body.message)
