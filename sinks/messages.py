"""The one shape every flow hands to a topic sink, whatever the transport."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OutMessage"]


class OutMessage(NamedTuple):
    """A record for ``topic``: Avro ``value`` in Confluent wire format, ``key`` as text.

    A NamedTuple rather than a frozen dataclass: one is built per output record on the hot path,
    and a tuple is several times cheaper to build.
    """

    topic: str
    key: str | None
    value: bytes
    timestamp_ms: int | None = None
