"""/api/v1/metrics: one window key's series for a chart, and every key's newest values for an
overview (rtmh.service.metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response

from rtmh.api.auth import requester
from rtmh.api.problems import responses
from rtmh.api.schemas import MetricSeries, ServicesOverview, WindowKeyLatest
from rtmh.service import metrics as service
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/metrics", tags=["metrics"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]


@router.get(
    "/series",
    summary="the windows of one key and metric type over a time range, oldest first",
    response_model=MetricSeries,
)
async def metric_series(
    request: Request,
    _who: Who,
    window_key: Annotated[
        str, Query(min_length=1, max_length=500, description="a service, or __all__")
    ],
    metric_type: Annotated[
        str,
        Query(
            min_length=1,
            max_length=500,
            description="log_count, error_count, error_rate, event_count or a metric name",
        ),
    ],
    since: Annotated[
        datetime | None,
        Query(description="windows starting at or after, with a zone; default: until - 1 h"),
    ] = None,
    until: Annotated[
        datetime | None, Query(description="windows starting before, with a zone; default: now")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=service.MAX_POINTS, description="windows at most")
    ] = service.DEFAULT_POINTS,
) -> Any:
    async with request.app.state.pool.connection() as conn:
        found = await service.series(
            conn, window_key, metric_type, since=since, until=until, limit=limit
        )
    # encoded as it is, without pydantic: the points are JSON already (see service.series);
    # MetricSeries still documents the shape, and the property run checks the answers match it
    return Response(msgspec.json.encode(found), media_type="application/json")


@router.get(
    "/keys",
    summary="window keys with data lately, each with its newest value per metric type",
    response_model=list[WindowKeyLatest],
)
async def metric_keys(
    request: Request,
    _who: Who,
    since_minutes: Annotated[
        int,
        Query(
            ge=1,
            le=service.MAX_SINCE_MINUTES,
            description="only keys with a window starting in the last this many minutes",
        ),
    ] = 30,
) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.latest(conn, since_minutes)


@router.get(
    "/services",
    summary="per service: log lines/s, error rate and p95 latency over the last minutes",
    response_model=ServicesOverview,
)
async def services_overview(
    request: Request,
    _who: Who,
    since_minutes: Annotated[int, Query(ge=1, le=service.MAX_SINCE_MINUTES)] = 30,
    latency_metric: Annotated[
        str, Query(min_length=1, max_length=500, description="whose p95 is the latency")
    ] = service.DEFAULT_LATENCY_METRIC,
) -> Any:
    async with request.app.state.pool.connection() as conn:
        found = await service.services(conn, since_minutes, latency_metric)
    return Response(msgspec.json.encode(found), media_type="application/json")
