"""PostgreSQL sinks. Every write is an upsert keyed by the record's identity, so replays are absorbed."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = ["dlq_rows", "DlqSink", "DLQ_UPSERT"]

DLQ_UPSERT = """
INSERT INTO telemetry_dlq (source_topic, source_partition, source_offset, reason, detail, raw, device_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING
"""


def dlq_rows(records: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """Rows for ``telemetry_dlq`` from decoded DLQ records (pure)."""
    return [(r["source_topic"], r["source_partition"], r["source_offset"], r["reason"], r["detail"],
             r["raw"], r.get("device_id")) for r in records]


class _DlqPartition(StatelessSinkPartition[Mapping[str, Any]]):
    def __init__(self, dsn: str):
        import psycopg

        self._conn = psycopg.connect(dsn, autocommit=False)

    def write_batch(self, items: list[Mapping[str, Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(DLQ_UPSERT, dlq_rows(items))
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


class DlqSink(DynamicSink[Mapping[str, Any]]):
    """Decoded ``telemetry.dlq`` records into the ``telemetry_dlq`` table (one connection per worker)."""

    def __init__(self, dsn: str):
        self._dsn = dsn

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DlqPartition:
        return _DlqPartition(self._dsn)
