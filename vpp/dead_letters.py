"""Dead letters (topic ``telemetry.dlq``): one record builder for every flow, sized so it always fits the topic.

A dead letter keeps where its message came from (``source_topic``, ``source_partition``, ``source_offset``,
``source_timestamp``) and the message's bytes. The bytes are kept whole up to ``RAW_KEEP_BYTES``; a longer
message keeps that prefix, with ``raw_length`` and ``raw_sha256`` of the whole and ``raw_truncated`` true, so a
dead letter of a message near the producer's 1,000,000-byte limit still fits the topic (a whole copy did not,
and its sink failure stopped canonicalize for good). ``detail`` is capped the same way.

Reason codes beyond the raw-reading codes of spec telemetry.md section 4, for messages of our own Avro topics:

- ``tombstone``: a null value;
- ``malformed_avro``: not the Confluent wire format, or a body that does not decode with its schema (junk,
  truncated bytes);
- ``unknown_schema``: a schema id the registry does not have;
- ``wrong_schema``: a record written with another topic's schema;
- ``contract_violation``: a record that decodes but breaks the topic's contract (the detail says which rule).
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["RAW_KEEP_BYTES", "DETAIL_KEEP_CHARS", "dead_letter_record", "kafka_timestamp_ms"]

#: Bytes of the original message a dead letter keeps (the DLQ topic's records stay far below the broker's limit).
RAW_KEEP_BYTES = 64 * 1024
DETAIL_KEEP_CHARS = 2_000


def kafka_timestamp_ms(message: Any) -> int | None:
    """The Kafka timestamp (epoch ms) of a message (a ``KafkaSourceMessage``'s ``(type, ms)``): when the platform
    received it. None when the message has none (a position without a timestamp, or Kafka's -1)."""
    stamp = getattr(message, "timestamp", None)
    if type(stamp) is tuple:
        stamp = stamp[1] if len(stamp) == 2 else None
    return stamp if type(stamp) is int and stamp > 0 else None


def dead_letter_record(reason: str, detail: str, raw: bytes | None, *, source_topic: str, source_partition: int,
                       source_offset: int, source_timestamp: int | None = None, device_id: str | None = None,
                       raw_keep_bytes: int = RAW_KEEP_BYTES) -> dict[str, Any]:
    """A ``telemetry.dlq`` record; ``raw`` (None for a tombstone) is kept whole only where it fits."""
    raw = b"" if raw is None else bytes(raw)
    truncated = len(raw) > raw_keep_bytes
    if len(detail) > DETAIL_KEEP_CHARS:
        detail = detail[:DETAIL_KEEP_CHARS] + f"... ({len(detail):,} characters)"
    return {"reason": reason, "detail": detail, "raw": raw[:raw_keep_bytes] if truncated else raw,
            "source_topic": source_topic, "source_partition": int(source_partition),
            "source_offset": int(source_offset), "device_id": device_id, "source_timestamp": source_timestamp,
            "raw_length": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest(), "raw_truncated": truncated}
