"""The asset registry: ``GET /api/assets`` (now, or ``?at=TIME``), ``GET /api/assets/{device}/history`` (viewers);
``POST /api/assets`` (register) and ``POST /api/assets/{device}/{operation}`` (update, move, enroll, unenroll,
commission, activate, suspend, decommission) for operators: the operations of ``vpp assets`` (one versioned
transaction each, ``sinks.asset_operations``), written to the audit log by the middleware with the user as
who made the change, and published on ``fleet.events``.

A refused change (an illegal lifecycle step, a bad rating) is a 422 naming why, an unknown device a 404; nothing
is half-done. A change the broker did not take the events of is recorded: 503 says so.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from console.auth import Principal
from console.deps import require
from console.errors import ApiError
from console.views import jsonable, parse_time_ms
from vpp.errors import UserError

__all__ = ["router"]

router = APIRouter(prefix="/api/assets", tags=["assets"])
_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
_TIME = Field(None, max_length=64, description="ISO-8601 time or epoch ms (default now)")


class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)
    at: str | None = _TIME


class Registration(_Change):
    device_id: str = _ID
    site_id: str = _ID
    region_path: str = Field(min_length=1, max_length=512)
    timezone: str = Field(min_length=1, max_length=64)
    capacity_wh: float = Field(gt=0, allow_inf_nan=False)
    max_charge_w: float = Field(ge=0, allow_inf_nan=False)
    max_discharge_w: float = Field(ge=0, allow_inf_nan=False)
    reserve_pct: float = Field(ge=0, le=100, allow_inf_nan=False)
    status: Literal["registered", "commissioned", "active"] = "registered"
    replaces: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")


class ChangeRequest(_Change):
    region_path: str | None = Field(None, min_length=1, max_length=512, description="move: the new site path")
    program: str | None = Field(None, min_length=1, max_length=32, description="enroll, unenroll")
    reserve_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    from_: str | None = Field(None, alias="from", max_length=64, description="enroll: start (default now)")
    until: str | None = Field(None, max_length=64, description="enroll: end (default open)")
    timezone: str | None = Field(None, min_length=1, max_length=64)
    capacity_wh: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_charge_w: float | None = Field(None, ge=0, allow_inf_nan=False)
    max_discharge_w: float | None = Field(None, ge=0, allow_inf_nan=False)
    status: Literal["registered", "commissioned", "active", "suspended"] | None = None


Operation = Literal["update", "move", "enroll", "unenroll", "commission", "activate", "suspend", "decommission"]


def _ms(text: str | None, name: str) -> int | None:
    return None if text is None else parse_time_ms(text, name)


def _apply(settings, operation: str, device_id: str, params: dict[str, Any], user: str, reason: str,
           at_ms: int | None) -> dict[str, Any]:
    from sinks.asset_operations import apply_operation

    try:
        result = apply_operation(settings, operation, device_id, params, changed_by=user, reason=reason, at_ms=at_ms,
                                 address=None)
    except UserError as exc:
        text = str(exc)
        if text.startswith("the change is recorded"):
            raise ApiError(503, text) from None
        raise ApiError(404 if "is not in the registry" in text else 422, text) from None
    after = result.after[device_id]
    return {"device_id": device_id, "operation": operation, "status": after.status, "node_path": after.node_path,
            "changed": bool(result.changed), "events": [e["kind"] for e in result.events],
            "certificates_revoked": result.revoked}


async def _run(request: Request, operation: str, device_id: str, params: dict[str, Any], user: str,
               body: _Change) -> dict[str, Any]:
    request.state.audit_target = device_id
    request.state.audit_detail = {"operation": operation, "reason": body.reason}
    return await run_in_threadpool(_apply, request.app.state.settings, operation, device_id, params, user,
                                   body.reason, _ms(body.at, "at"))


@router.get("", dependencies=[Depends(require("viewer"))])
async def list_assets(request: Request, prefix: str | None = Query(None, max_length=512),
                      at: str | None = Query(None, max_length=64, description="the registry as it was then"),
                      include_decommissioned: bool = Query(False, alias="all")) -> dict:
    from datetime import datetime, timezone

    from sinks.asset_history import assets_at, list_assets as current
    from vpp.asset_lifecycle import enrollments_to_json

    dsn = request.app.state.settings.postgres_dsn
    if at is None:
        rows = await run_in_threadpool(current, dsn, prefix, include_decommissioned=include_decommissioned)
    else:
        when = datetime.fromtimestamp(_ms(at, "at") / 1000, timezone.utc)
        rows = await run_in_threadpool(assets_at, dsn, when, prefix)
    now_ms = int(time.time() * 1000)
    out = []
    for a in rows:
        item = {name: getattr(a, name) for name in a.__slots__ if name != "programs"}
        item["programs"] = enrollments_to_json(a.enrollments)
        item["enrolled_now"] = sorted({e.program for e in a.enrollments if e.covers(now_ms)})
        out.append(item)
    return {"at": at, "assets": out}


@router.get("/{device_id}/history", dependencies=[Depends(require("viewer"))])
async def device_history(request: Request, device_id: str) -> dict:
    from sinks.asset_history import history

    if len(device_id) > 64:
        raise ApiError(422, "device_id is longer than 64 characters")
    rows = await run_in_threadpool(history, request.app.state.settings.postgres_dsn, device_id)
    if not rows:
        raise ApiError(404, f"device {device_id!r} was never registered")
    return {"device_id": device_id, "versions": jsonable(rows)}


@router.post("", status_code=201, responses={404: {}, 422: {}, 503: {}})
async def register(request: Request, body: Registration, principal: Principal = Depends(require("operator"))) -> dict:
    params = body.model_dump(exclude={"device_id", "reason", "at"})
    return await _run(request, "add", body.device_id, params, principal.name, body)


@router.post("/{device_id}/{operation}", responses={404: {}, 422: {}, 503: {}})
async def change(request: Request, device_id: str, operation: Operation, body: ChangeRequest,
                 principal: Principal = Depends(require("operator"))) -> dict:
    if len(device_id) > 64:
        raise ApiError(422, "device_id is longer than 64 characters")
    params = body.model_dump(exclude={"reason", "at", "from_", "until"})
    params["from_ms"], params["to_ms"] = _ms(body.from_, "from"), _ms(body.until, "until")
    return await _run(request, operation, device_id, params, principal.name, body)
