"""The one shape every flow hands to a topic sink, whatever the transport."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OutMessage"]


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A record for ``topic``: Avro ``value`` in Confluent wire format, ``key`` as text."""

    topic: str
    key: str | None
    value: bytes
    timestamp_ms: int | None = None
