"""``GET /api/audit`` (admin): the append-only audit log, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from console.deps import require
from console.views import jsonable_row

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["audit"], dependencies=[Depends(require("admin"))])


@router.get("/audit")
async def audit(request: Request, limit: int = Query(100, ge=1, le=1000),
                actor: str | None = Query(None, max_length=200)) -> dict:
    rows = await run_in_threadpool(request.app.state.store.read_audit, limit=limit, actor=actor)
    return {"entries": [jsonable_row(r) for r in rows]}
