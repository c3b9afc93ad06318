"""/api/v1/rules: CRUD and enable/disable (rtmh.service.rules); POST /rules/backtest replays a
rule over stored windows (rtmh.service.backtest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Depends, Query, Request, Response

from rtmh.api.auth import reader, requester
from rtmh.api.problems import responses
from rtmh.api.schemas import BacktestIn, RuleOut
from rtmh.service import backtest as backtests
from rtmh.service import rules as service
from rtmh.service.errors import Invalid
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/rules", tags=["rules"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]
# A rule declared in a config file (`rtmh config apply`) is edited there; 409 unless forced.
Force = Annotated[
    bool,
    Query(description="edit a rule managed by a config file anyway (the next apply reverts it)"),
]
# a backtest changes nothing: a read token may run one
Reader = Annotated[Principal, Depends(reader)]
# The body is read as a plain object and checked by the engine's validate_rule (one place for
# rule validation); RuleIn only documents it in the OpenAPI document.
_RULE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RuleIn"}}},
    }
}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "any fields of RuleIn"}
            }
        },
    }
}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("body", f"must be a JSON object, got {type(body).__name__}")
    return body


@router.post(
    "/backtest",
    summary="what a rule (saved or not) would have done over the stored windows of a range",
    # the service's own dataclasses document the answer: one definition of its shape
    response_model=backtests.BacktestResult,
    responses=responses(404, 409),
)
async def backtest(request: Request, _who: Reader, body: BacktestIn) -> Any:
    now = datetime.now(UTC)
    end = body.end or now
    start = body.start or end - timedelta(hours=1)
    async with request.app.state.pool.connection() as conn:
        if isinstance(body.rule, dict):
            rule = backtests.rule_from_definition(body.rule)
        else:
            rule = await backtests.load_saved_rule(conn, body.rule)
        result = await backtests.run_backtest(conn, rule, start, end, now=now)
    return msgspec.to_builtins(result)


@router.get("", summary="every rule, by name", response_model=list[RuleOut])
async def list_rules(request: Request, _who: Who) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.list_rules(conn)


@router.post(
    "",
    summary="create a rule",
    status_code=201,
    response_model=RuleOut,
    responses=responses(409),
    openapi_extra=_RULE_BODY,
)
async def create_rule(request: Request, _who: Who, body: Annotated[Any, Body()]) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.create_rule(conn, _object(body))


@router.get(
    "/{rule}", summary="one rule, by id or name", response_model=RuleOut, responses=responses(404)
)
async def get_rule(request: Request, _who: Who, rule: str) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.get_rule(conn, rule)


@router.put(
    "/{rule}",
    summary="replace a rule (fields left out take their defaults)",
    response_model=RuleOut,
    responses=responses(404, 409),
    openapi_extra=_RULE_BODY,
)
async def replace_rule(
    request: Request, _who: Who, rule: str, body: Annotated[Any, Body()], force: Force = False
) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.replace_rule(conn, rule, _object(body), force=force)


@router.patch(
    "/{rule}",
    summary="change some fields of a rule",
    response_model=RuleOut,
    responses=responses(404, 409),
    openapi_extra=_PATCH_BODY,
)
async def patch_rule(
    request: Request, _who: Who, rule: str, body: Annotated[Any, Body()], force: Force = False
) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.patch_rule(conn, rule, _object(body), force=force)


@router.post(
    "/{rule}/enable",
    summary="enable a rule",
    response_model=RuleOut,
    responses=responses(404, 409),
)
async def enable_rule(request: Request, _who: Who, rule: str, force: Force = False) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.set_enabled(conn, rule, True, force=force)


@router.post(
    "/{rule}/disable",
    summary="disable a rule",
    response_model=RuleOut,
    responses=responses(404, 409),
)
async def disable_rule(request: Request, _who: Who, rule: str, force: Force = False) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.set_enabled(conn, rule, False, force=force)


@router.delete("/{rule}", summary="delete a rule", status_code=204, responses=responses(404, 409))
async def delete_rule(request: Request, _who: Who, rule: str, force: Force = False) -> Response:
    async with request.app.state.pool.connection() as conn:
        await service.delete_rule(conn, rule, force=force)
    return Response(status_code=204)
