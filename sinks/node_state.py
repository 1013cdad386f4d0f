"""PostgreSQL ``node_state``: the latest window of every node of the fleet tree (device leaves included).

One row per node (``node_path`` primary key) holding the fields of its
newest ``fleet.aggregates`` record. Dispatch reads device and node state
from it, ``vpp tree`` shows it. A row is replaced only by a record of the
same or a newer window (``window_start``), so a re-delivered or late-arriving
older record never rolls a node back, and replaying the topic ends in the
same table. A node that has lost all its devices gets one all-zero record
from the flow, so its row then says ``devices_known = 0`` rather than
keeping stale numbers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sinks.postgres import PostgresBatchSink

__all__ = ["NODE_STATE_COLUMNS", "NODE_STATE_UPSERT", "node_state_rows", "NodeStateSink", "read_node_state"]

NODE_STATE_COLUMNS = ("node_path", "depth", "window_start", "window_end", "devices_known", "devices_reporting",
                      "estimated_devices", "battery_w", "solar_w", "load_w", "grid_w", "energy_available_wh",
                      "headroom_wh", "discharge_available_w", "charge_available_w", "capacity_wh", "soc_pct", "late")
_TIMES = frozenset({"window_start", "window_end"})


def _upsert() -> str:
    from psycopg import sql

    columns = sql.SQL(", ").join(map(sql.Identifier, NODE_STATE_COLUMNS))
    values = sql.SQL(", ").join(sql.Placeholder() * len(NODE_STATE_COLUMNS))
    updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in NODE_STATE_COLUMNS[1:])
    return sql.SQL(
        "INSERT INTO node_state ({columns}) VALUES ({values}) ON CONFLICT (node_path) DO UPDATE SET {updates}, "
        "updated_at = now() WHERE node_state.window_start <= EXCLUDED.window_start"
    ).format(columns=columns, values=values, updates=updates).as_string(None)


NODE_STATE_UPSERT = _upsert()


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def node_state_rows(records: Iterable[Mapping[str, Any]]) -> list[tuple]:
    """Rows for ``node_state``: the newest record of each node in the batch (pure)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for r in records:
        prev = newest.get(r["node_path"])
        if prev is None or r["window_start"] >= prev["window_start"]:
            newest[r["node_path"]] = r
    return [tuple(_utc(r[c]) if c in _TIMES else r.get(c) for c in NODE_STATE_COLUMNS)
            for r in sorted(newest.values(), key=lambda r: r["node_path"])]  # a fixed order: no deadlocks


def write_node_states(cur, records: list[Mapping[str, Any]]) -> None:
    cur.executemany(NODE_STATE_UPSERT, node_state_rows(records))


class NodeStateSink(PostgresBatchSink[Mapping[str, Any]]):
    """Decoded ``fleet.aggregates`` records into ``node_state``."""

    def __init__(self, dsn: str):
        super().__init__(dsn, write_node_states)


def read_node_state(dsn: str, root: str | None = None, *, levels: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``node_state`` at and under ``root`` (every root when None), at most ``levels`` below it."""
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    conditions, params = [], []
    base = 1
    if root:
        root = root.strip("/")
        conditions.append(sql.SQL("(node_path = %s OR node_path LIKE %s)"))
        params += [root, root.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"]
        base = root.count("/") + 1
    if levels is not None:
        conditions.append(sql.SQL("depth <= %s"))
        params.append(base + levels)
    where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    query = sql.SQL("SELECT * FROM node_state {} ORDER BY node_path").format(where)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()
