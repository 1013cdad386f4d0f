"""PostgreSQL sinks. Every write is an upsert keyed by the record's identity, so replays are absorbed.

``PostgresBatchSink`` is the shape they share: one connection per worker, one transaction per batch, the
rows written by a function of the cursor and the batch.

A dead letter's identity is its message: source position, the SHA-256 of its bytes and its Kafka timestamp
(a recreated topic reuses offsets; its new dead letters are new rows).
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = ["PostgresBatchSink", "dlq_rows", "DlqSink", "DLQ_UPSERT"]

X = TypeVar("X")
#: ``write(cursor, batch)``: the statements of one batch (committed together by the sink)
BatchWriter = Callable[[Any, list], None]

DLQ_UPSERT = """
INSERT INTO telemetry_dlq (source_topic, source_partition, source_offset, reason, detail, raw, device_id,
                           source_timestamp_ms, raw_length, raw_sha256, raw_truncated)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (source_topic, source_partition, source_offset, raw_sha256, (coalesce(source_timestamp_ms, -1))) DO NOTHING
"""


def dlq_rows(records: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """Rows for ``telemetry_dlq`` from decoded DLQ records (pure); records written before the DLQ schema had
    ``raw_sha256`` get it computed from ``raw``."""
    import hashlib

    return [(r["source_topic"], r["source_partition"], r["source_offset"], r["reason"], r["detail"], r["raw"],
             r.get("device_id"), r.get("source_timestamp"), r.get("raw_length") or len(r["raw"]),
             r.get("raw_sha256") or hashlib.sha256(r["raw"]).hexdigest(), bool(r.get("raw_truncated")))
            for r in records]


class _BatchPartition(StatelessSinkPartition[X]):
    def __init__(self, dsn: str, write: BatchWriter):
        import psycopg

        self._conn, self._write = psycopg.connect(dsn, autocommit=False), write

    def write_batch(self, items: list[X]) -> None:
        with self._conn.cursor() as cur:
            self._write(cur, items)
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


class PostgresBatchSink(DynamicSink[X], Generic[X]):
    """Batches written by ``write(cursor, items)`` in one transaction each (one connection per worker)."""

    def __init__(self, dsn: str, write: BatchWriter):
        self._dsn, self._write = dsn, write

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BatchPartition[X]:
        return _BatchPartition(self._dsn, self._write)


def write_dead_letters(cur, records: list[Mapping[str, Any]]) -> None:
    cur.executemany(DLQ_UPSERT, dlq_rows(records))


class DlqSink(PostgresBatchSink[Mapping[str, Any]]):
    """Decoded ``telemetry.dlq`` records into the ``telemetry_dlq`` table."""

    def __init__(self, dsn: str):
        super().__init__(dsn, write_dead_letters)
