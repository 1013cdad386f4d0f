"""Alerts: ``GET /api/alerts?state=`` (viewer), ``POST /api/alerts/{id}/ack`` and ``/silence`` (operator)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from console.auth import Principal
from console.deps import require
from console.errors import ApiError
from console.views import jsonable_row

__all__ = ["router"]

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


class Silence(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: float = Field(60, gt=0, le=7 * 24 * 60, allow_inf_nan=False)


@router.get("", dependencies=[Depends(require("viewer"))])
async def alerts(request: Request, state: Literal["pending", "firing", "resolved", "dropped"] | None = Query(None),
                 limit: int = Query(200, ge=1, le=1000)) -> dict:
    from sinks.alert_admin import list_alerts

    rows = await run_in_threadpool(list_alerts, request.app.state.settings.postgres_dsn, state, limit=limit)
    return {"alerts": [jsonable_row(r) for r in rows]}


@router.post("/{alert_id}/ack")
async def ack(request: Request, alert_id: str, principal: Principal = Depends(require("operator"))) -> dict:
    from sinks.alert_admin import AlertNotFound, ack_alert

    request.state.audit_target = alert_id[:200]
    try:
        row = await run_in_threadpool(ack_alert, request.app.state.settings.postgres_dsn, alert_id, principal.name)
    except AlertNotFound:
        raise ApiError(404, f"no alert {alert_id!r}") from None
    return jsonable_row(row)


@router.post("/{alert_id}/silence")
async def silence(request: Request, alert_id: str, body: Silence | None = Body(None),
                  principal: Principal = Depends(require("operator"))) -> dict:
    from sinks.alert_admin import AlertNotFound, silence_alert

    request.state.audit_target = alert_id[:200]
    minutes = (body or Silence()).minutes
    until = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    request.state.audit_detail = {"minutes": minutes}
    try:
        row = await run_in_threadpool(silence_alert, request.app.state.settings.postgres_dsn, alert_id, principal.name, until)
    except AlertNotFound:
        raise ApiError(404, f"no alert {alert_id!r}") from None
    return jsonable_row(row)
