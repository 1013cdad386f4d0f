"""Dispatch: ``POST /api/dispatch`` (operator) issues a command as ``vpp dispatch send`` does, with the user as
``issued_by``; ``GET /api/dispatch/{command_id}`` shows what ``vpp dispatch show`` prints, plus the node's
measured power; ``GET /api/dispatch`` lists the newest commands.

A refused command is refused before anything is sent: nothing half-done.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from console.auth import Principal
from console.deps import require
from console.errors import ApiError
from console.views import jsonable, jsonable_row
from vpp.errors import UserError

__all__ = ["router"]

router = APIRouter(prefix="/api/dispatch", tags=["dispatch"])


class DispatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node_path: str = Field(min_length=1, max_length=512)
    target_w: float = Field(allow_inf_nan=False, description="W: > 0 discharge, < 0 charge")
    minutes: float = Field(gt=0, allow_inf_nan=False)


class DispatchAnswer(BaseModel):
    command_id: str
    node_path: str
    target_w: float
    start: int
    end: int
    issued_by: str


def _issue(settings, body: DispatchRequest, user: str) -> dict:
    from sinks.dispatch_commands import node_power_limits, send_command
    from vpp.commands import command_record

    try:
        record = command_record(body.node_path, body.target_w, body.minutes, start_ms=int(time.time() * 1000),
                                issued_by=user)
    except UserError as exc:
        raise ApiError(422, str(exc).replace("--watts", "target_w").replace("--minutes", "minutes")) from None
    limits = node_power_limits(settings.postgres_dsn, record["node_path"])
    if limits is None:
        raise ApiError(422, f"no node {record['node_path']!r} in the fleet: no registered device lies under it")
    if record["target_w"] > limits["max_discharge_w"] or -record["target_w"] > limits["max_charge_w"]:
        raise ApiError(422, f"target_w {record['target_w']:g} W is out of range for {record['node_path']!r}: its "
                            f"{limits['devices']} devices discharge at most {limits['max_discharge_w']:g} W and "
                            f"charge at most {limits['max_charge_w']:g} W")
    try:
        send_command(settings, record, timeout_s=10.0)
    except UserError as exc:
        raise ApiError(503, str(exc)) from None
    return record


@router.post("", status_code=201, response_model=DispatchAnswer, responses={422: {}, 503: {}})
async def dispatch(request: Request, body: DispatchRequest,
                   principal: Principal = Depends(require("operator"))) -> DispatchAnswer:
    request.state.audit_target = body.node_path
    record = await run_in_threadpool(_issue, request.app.state.settings, body, principal.name)
    request.state.audit_detail = {"command_id": record["command_id"], "target_w": record["target_w"],
                                  "minutes": body.minutes}
    return DispatchAnswer(**{k: record[k] for k in DispatchAnswer.model_fields})


@router.get("", dependencies=[Depends(require("viewer"))])
async def recent(request: Request, limit: int = Query(20, ge=1, le=200)) -> dict:
    from sinks.command_control import recent_commands

    rows = await run_in_threadpool(recent_commands, request.app.state.settings.postgres_dsn, limit=limit)
    return {"commands": [jsonable_row(r) for r in rows]}


def _show(dsn: str, command_id: str) -> dict | None:
    from console.api.fleet import read_node
    from sinks.command_control import show_command

    found = show_command(dsn, command_id)
    if found is None:
        return None
    node = read_node(dsn, found["command"]["node_path"])
    found["node"] = None if node is None else {k: node[k] for k in ("battery_w", "grid_w", "window_end",
                                                                     "devices_reporting")}
    return jsonable(found)


@router.get("/{command_id}", dependencies=[Depends(require("viewer"))])
async def show(request: Request, command_id: str) -> dict:
    if len(command_id) > 200:
        raise ApiError(422, "command_id is longer than 200 characters")
    found = await run_in_threadpool(_show, request.app.state.settings.postgres_dsn, command_id)
    if found is None:
        raise ApiError(404, f"no dispatch command {command_id!r} in the store (the dispatch flow stores it "
                            "once it has read it)")
    return found
