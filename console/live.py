"""Live events for the console: one poller per process, fanned out to every server-sent-event client.

The poller reads what changed in PostgreSQL since its last look (``node_state`` -> ``aggregate``,
``alerts`` -> ``alert``, ``dispatch_statuses`` -> ``dispatch``, ``autobidder_workflows`` -> ``market``)
once per ``poll_s``, only while a client listens, and puts each event on every subscriber's queue. A
client too slow to keep up (its queue full) is dropped; it reconnects and reloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from console.views import jsonable, jsonable_row

__all__ = ["Broadcaster", "Subscription", "sse_frame", "EVENT_KINDS", "matches"]

_log = logging.getLogger(__name__)
EVENT_KINDS = ("aggregate", "alert", "dispatch", "market")


def sse_frame(kind: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event (pure); ``data`` as JSON on one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def matches(kinds: frozenset[str], path: str | None, kind: str, data: dict[str, Any],
            max_depth: int | None = None) -> bool:
    """Whether a subscriber of ``kinds`` under ``path`` (nodes no deeper than ``max_depth``) wants this event (pure)."""
    if kind not in kinds:
        return False
    if max_depth is not None and kind == "aggregate" and data.get("depth", 0) > max_depth:
        return False
    node = data.get("node_path")
    if not path or not node:
        return True
    return node == path or node.startswith(path + "/") or path.startswith(node + "/")


@dataclass(eq=False)
class Subscription:
    kinds: frozenset[str]
    path: str | None
    max_depth: int | None = None  # deepest node depth wanted (aggregate events); None: every level
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=2000))
    dropped: bool = False


class Broadcaster:
    def __init__(self, dsn: str, *, poll_s: float = 1.0):
        self.dsn = dsn
        self.poll_s = poll_s
        self.subscribers: set[Subscription] = set()
        self._since: dict[str, datetime] = {}
        self._task: asyncio.Task | None = None
        self.events_sent = 0

    def subscribe(self, kinds: frozenset[str], path: str | None, max_depth: int | None = None) -> Subscription:
        sub = Subscription(kinds, path, max_depth)
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass

    async def _run(self) -> None:
        while self.subscribers:
            try:
                events = await run_in_threadpool(self._poll)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the live view
                _log.warning("live poll failed: %s", exc)
                events = []
            self.publish(events)
            await asyncio.sleep(self.poll_s)

    def publish(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for sub in list(self.subscribers):
            for kind, data in events:
                if matches(sub.kinds, sub.path, kind, data, sub.max_depth):
                    try:
                        sub.queue.put_nowait((kind, data))
                        self.events_sent += 1
                    except asyncio.QueueFull:
                        sub.dropped = True
                        self.subscribers.discard(sub)
                        break

    def _poll(self) -> list[tuple[str, dict[str, Any]]]:
        import psycopg
        from psycopg.rows import dict_row

        from sinks.alert_admin import alerts_changed_since

        first = not self._since
        events: list[tuple[str, dict[str, Any]]] = []
        with psycopg.connect(self.dsn, row_factory=dict_row, connect_timeout=5) as conn:
            # the database's clock decides what is new: rows stamped by now() of their own transaction
            db_now = conn.execute("SELECT now() AS t").fetchone()["t"]
            if first:
                self._since = dict.fromkeys(EVENT_KINDS, db_now)
                return []
            since = self._since
            # the deepest level any client wants: a fleet's device rows are read only when someone asks for them
            wanted = [s.max_depth for s in list(self.subscribers) if "aggregate" in s.kinds]
            deepest = None if not wanted or None in wanted else max(wanted)
            for row in conn.execute("SELECT * FROM node_state WHERE updated_at > %s AND (%s::int IS NULL OR depth <= %s) "
                                    "ORDER BY node_path", (since["aggregate"], deepest, deepest)):
                events.append(("aggregate", jsonable_row(row)))
                self._since["aggregate"] = max(self._since["aggregate"], row["updated_at"])
            for row in conn.execute("SELECT s.*, c.target_w, c.issued_by FROM dispatch_statuses s JOIN dispatch_commands c "
                                    "USING (command_id) WHERE s.stored_at > %s ORDER BY s.stored_at",
                                    (since["dispatch"],)):
                events.append(("dispatch", jsonable_row(row)))
                self._since["dispatch"] = max(self._since["dispatch"], row["stored_at"])
            try:
                for row in conn.execute("SELECT * FROM autobidder_workflows WHERE stored_at > %s ORDER BY stored_at",
                                        (since["market"],)):
                    events.append(("market", jsonable_row(row)))
                    self._since["market"] = max(self._since["market"], row["stored_at"])
            except psycopg.errors.UndefinedTable:
                conn.rollback()
            alert_since = since["alert"]
            for row in alerts_changed_since(conn, alert_since):
                events.append(("alert", jsonable(row)))
            self._since["alert"] = db_now
        return events
