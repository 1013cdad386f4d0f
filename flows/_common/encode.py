"""Encoding a batch of a worker's result records (keyed by node path, stamped with when they were produced)."""

from __future__ import annotations

from typing import Any

from sinks.messages import OutMessage

__all__ = ["encode_results"]


def encode_results(serde, topic: str, records: list[dict[str, Any]]) -> list[OutMessage]:
    values = serde.encode_many(topic, records)
    return [OutMessage(topic, r["node_path"], v, r["produced_at"]) for r, v in zip(records, values)]
