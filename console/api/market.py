"""``GET /api/market``: per node and interval the forecast and actual price, the plan, the bid and the award;
and the market simulator's own status when it answers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from console.deps import require
from console.views import jsonable

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["market"], dependencies=[Depends(require("viewer"))])


def _market_status(url: str) -> dict | None:
    import httpx

    try:
        answer = httpx.get(url.rstrip("/") + "/status", timeout=1.0)
        return answer.json() if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


@router.get("/market")
async def market(request: Request, limit: int = Query(96, ge=1, le=1000)) -> dict:
    from sinks.market_view import market_view

    settings = request.app.state.settings
    rows = await run_in_threadpool(market_view, settings.postgres_dsn, limit=limit)
    status = await run_in_threadpool(_market_status, settings.market_url)
    return {"intervals": jsonable(rows), "market": jsonable(status)}
