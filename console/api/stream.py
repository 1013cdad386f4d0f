"""``GET /api/stream``: server-sent events (``aggregate``, ``alert``, ``dispatch``, ``market``) for one page.

``?events=aggregate,alert`` picks the kinds (default all), ``?path=P`` keeps node events at, above or
under ``P``, ``?depth=N`` keeps aggregates at most N levels below ``P`` (or below the roots): a page showing
the top of a 100,000-device fleet does not receive every device's window. A comment line every ``keepalive_s`` keeps proxies from closing an idle stream and
reveals a client that went away; the stream then ends and its subscription is dropped.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from console.deps import require
from console.errors import ApiError
from console.live import EVENT_KINDS, sse_frame

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["stream"])


@router.get("/stream", dependencies=[Depends(require("viewer"))],
            responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}})
async def stream(request: Request, events: str = Query(",".join(EVENT_KINDS), max_length=200),
                 path: str | None = Query(None, max_length=512),
                 depth: int | None = Query(None, ge=0, le=32)) -> StreamingResponse:
    kinds = frozenset(k.strip() for k in events.split(",") if k.strip())
    unknown = kinds - set(EVENT_KINDS)
    if unknown or not kinds:
        raise ApiError(422, f"events must be a comma-separated subset of {', '.join(EVENT_KINDS)}")
    broadcaster = request.app.state.broadcaster
    keepalive_s = request.app.state.keepalive_s
    root = path.strip("/") if path else None
    max_depth = None if depth is None else (root.count("/") + 1 if root else 0) + depth
    sub = broadcaster.subscribe(kinds, root, max_depth)

    async def frames():
        counter = 0
        try:
            yield f"retry: 3000\n: subscribed to {','.join(sorted(kinds))}\n\n"
            while not sub.dropped:
                try:
                    kind, data = await asyncio.wait_for(sub.queue.get(), timeout=keepalive_s)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield ": keep-alive\n\n"
                    continue
                counter += 1
                yield sse_frame(kind, data, counter)
        finally:
            broadcaster.unsubscribe(sub)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
