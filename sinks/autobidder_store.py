"""The autobidder's workflow facts and statuses in PostgreSQL (tables of migration ``005_autobidder``).

Written by a sink inside the autobidder flow (``flows.autobidder.flow``) from the facts its state
machine records. Both writes are upserts, so the copies an at-least-once restart re-produces are
absorbed:

- ``autobidder_facts`` by ``(node_path, interval_start, step)``: a fact is immutable, the first
  copy stands (``DO NOTHING``);
- ``autobidder_workflows`` by ``(node_path, interval_start)``: the status with the latest ``at``
  wins, so a replayed older status never overwrites a newer one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sinks.postgres import PostgresBatchSink

__all__ = ["AutobidderStore", "store_rows", "FACT_UPSERT", "WORKFLOW_UPSERT", "workflow_facts"]

FACT_UPSERT = """
INSERT INTO autobidder_facts (node_path, interval_start, step, fact, at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (node_path, interval_start, step) DO NOTHING
"""
WORKFLOW_UPSERT = """
INSERT INTO autobidder_workflows (node_path, interval_start, status, bid_id, reason, at) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (node_path, interval_start) DO UPDATE
    SET status = EXCLUDED.status, bid_id = EXCLUDED.bid_id, reason = EXCLUDED.reason, at = EXCLUDED.at, stored_at = now()
    WHERE autobidder_workflows.at <= EXCLUDED.at
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, timezone.utc)


def store_rows(items: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[list[tuple], list[tuple]]:
    """``(fact rows, workflow rows)`` from ``("fact" | "workflow", record)`` items (pure; facts as JSON-ready dicts).

    Within a batch the first fact per key and the last status per workflow are kept.
    """
    facts: dict[tuple, tuple] = {}
    workflows: dict[tuple, tuple] = {}
    for kind, r in items:
        if kind == "fact":
            key = (r["node_path"], r["interval_start"], r["step"])
            facts.setdefault(key, (r["node_path"], _ts(r["interval_start"]), r["step"], r["fact"], _ts(r["at"])))
        elif kind == "workflow":
            key = (r["node_path"], r["interval_start"])
            workflows[key] = (r["node_path"], _ts(r["interval_start"]), r["status"], r["bid_id"], r.get("reason"),
                              _ts(r["at"]))
        else:
            raise ValueError(f"unknown autobidder store record kind {kind!r}; expected fact or workflow")
    return list(facts.values()), list(workflows.values())


def write_autobidder(cur, items: list[tuple[str, Mapping[str, Any]]]) -> None:
    from psycopg.types.json import Jsonb

    facts, workflows = store_rows(items)
    if facts:
        cur.executemany(FACT_UPSERT, [(*row[:3], Jsonb(row[3]), row[4]) for row in facts])
    if workflows:
        cur.executemany(WORKFLOW_UPSERT, workflows)


class AutobidderStore(PostgresBatchSink[tuple[str, Mapping[str, Any]]]):
    """``("fact" | "workflow", record)`` items into PostgreSQL."""

    def __init__(self, dsn: str):
        super().__init__(dsn, write_autobidder)


def workflow_facts(dsn: str, node_path: str, interval_start_ms: int | None = None) -> list[dict[str, Any]]:
    """The stored facts of a node (of one interval), oldest interval first, in step order of recording."""
    import psycopg

    query = "SELECT interval_start, step, fact, at FROM autobidder_facts WHERE node_path = %s"
    params: list[Any] = [node_path]
    if interval_start_ms is not None:
        query += " AND interval_start = %s"
        params.append(_ts(interval_start_ms))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(query + " ORDER BY interval_start, at, stored_at", params).fetchall()
    return [{"interval_start": int(r[0].timestamp() * 1000), "step": r[1], "fact": r[2], "at": int(r[3].timestamp() * 1000)}
            for r in rows]
