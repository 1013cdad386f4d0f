"""The fleet: ``GET /api/tree``, ``GET /api/nodes/{path}`` and ``GET /api/nodes/{path}/series``."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from console.deps import require
from console.errors import ApiError
from console.views import jsonable_row, parse_time_ms

__all__ = ["router", "read_node"]

router = APIRouter(prefix="/api", tags=["fleet"], dependencies=[Depends(require("viewer"))])
_MAX_SERIES_MS = 31 * 86_400_000


def read_node(dsn: str, path: str) -> dict[str, Any] | None:
    from sinks.node_state import read_node_state

    rows = read_node_state(dsn, path, levels=0)
    return next((r for r in rows if r["node_path"] == path.strip("/")), None)


@router.get("/tree")
async def tree(request: Request, path: str | None = Query(None, max_length=512),
               depth: int = Query(1, ge=0, le=32),
               include_stale: bool = Query(False, alias="all", description="also nodes whose devices all went stale")) -> dict:
    from sinks.node_state import read_node_state

    dsn = request.app.state.settings.postgres_dsn
    root = path.strip("/") if path else None
    rows = await run_in_threadpool(read_node_state, dsn, root, levels=depth)
    if root and not rows:
        raise ApiError(404, f"no node {root!r} in the fleet tree")
    kept = [jsonable_row(r) for r in rows if include_stale or r["devices_known"] > 0]
    return {"path": root, "depth": depth, "nodes": kept}


@router.get("/nodes/{path:path}/series")
async def series(request: Request, path: str, field: str = Query("battery_w", max_length=64),
                 from_: str | None = Query(None, alias="from", max_length=64),
                 to: str | None = Query(None, max_length=64)) -> dict:
    from sinks.series import SERIES_FIELDS, node_series_points

    if field not in SERIES_FIELDS:
        raise ApiError(422, f"unknown field {field!r}; one of {', '.join(SERIES_FIELDS)}")
    now_ms = int(time.time() * 1000)
    to_ms = parse_time_ms(to, "to") if to else now_ms
    from_ms = parse_time_ms(from_, "from") if from_ else to_ms - 3_600_000
    if from_ms > to_ms:
        raise ApiError(422, "'from' is after 'to'")
    if to_ms - from_ms > _MAX_SERIES_MS:
        raise ApiError(422, "at most 31 days of history per request")
    settings = request.app.state.settings
    node = await run_in_threadpool(read_node, settings.postgres_dsn, path)
    if node is None:
        raise ApiError(404, f"no node {path.strip('/')!r} in the fleet tree")
    try:
        points = await run_in_threadpool(node_series_points, settings.timeseries_url, node["node_path"], field,
                                         from_ms, to_ms)
    except Exception as exc:  # noqa: BLE001 - the store's failure is the client's 503, not a 500
        raise ApiError(503, f"the time-series store did not answer: {type(exc).__name__}") from None
    return {"node_path": node["node_path"], "field": field, "from": from_ms, "to": to_ms, "points": points}


@router.get("/nodes/{path:path}")
async def node(request: Request, path: str) -> dict:
    row = await run_in_threadpool(read_node, request.app.state.settings.postgres_dsn, path)
    if row is None:
        raise ApiError(404, f"no node {path.strip('/')!r} in the fleet tree")
    out = jsonable_row(row)
    out["age_s"] = round((datetime.now(timezone.utc) - row["window_end"]).total_seconds(), 1)
    return out
