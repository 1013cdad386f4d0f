"""Avro serialization in the Confluent wire format, with schemas from ``schemas/``.

Wire format: one magic byte ``0x00``, the 4-byte big-endian schema id, then
the Avro binary body (fastavro). Schema ids come from the schema registry
(subjects by TopicNameStrategy: ``<topic>-value``) or, for replay without any
service, from a fixed local numbering (``Serde.local()``).

Records are plain dicts whose timestamp fields hold epoch milliseconds
(``int``): we read and write with a copy of each schema stripped of
``logicalType`` annotations, which is binary-identical and saves converting to
``datetime`` and back on the hot path. Bytes fields are ``bytes``.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Iterable, Mapping

import fastavro

__all__ = [
    "TOPIC_SCHEMAS",
    "Serde",
    "SerdeError",
    "schema_text",
    "parsed_schema",
    "subject_for",
    "to_json_value",
]

#: Which record type each topic carries (file name in schemas/ without .avsc).
TOPIC_SCHEMAS: Mapping[str, str] = {
    "telemetry.canonical": "canonical_reading",
    "telemetry.dlq": "dlq_record",
    "fleet.aggregates": "node_aggregate",
    "dispatch.commands": "dispatch_command",
    "device.commands": "device_command",
    "dispatch.status": "dispatch_status",
    "market.prices": "market_price",
    "market.bids": "market_bid",
    "market.awards": "market_award",
    "autobidder.forecast.requests": "forecast_request",
    "autobidder.forecast.results": "forecast_result",
    "autobidder.optimize.requests": "optimize_request",
    "autobidder.optimize.results": "optimize_result",
    "device.command_acks": "device_command_ack",
}

_MAGIC = 0
_HEADER = struct.Struct(">bI")


class SerdeError(ValueError):
    """A message could not be encoded or decoded; the message says why."""


@cache
def schema_text(name: str) -> str:
    """The JSON text of ``schemas/<name>.avsc``."""
    return resources.files("schemas").joinpath(f"{name}.avsc").read_text()


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


@cache
def parsed_schema(name: str) -> Any:
    """The schema parsed for fastavro, timestamps as plain ``long`` (epoch ms)."""
    return fastavro.parse_schema(_strip_logical(json.loads(schema_text(name))))


def subject_for(topic: str) -> str:
    """TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


def _schema_name_of(topic: str) -> str:
    # topics may carry a deployment prefix ("test-1234.telemetry.canonical")
    for base, name in TOPIC_SCHEMAS.items():
        if topic == base or topic.endswith("." + base) or topic.endswith(base):
            return name
    raise SerdeError(f"no Avro schema is declared for topic {topic!r}; known: {', '.join(TOPIC_SCHEMAS)}")


@dataclass
class Serde:
    """Encode/decode records of our topics in the Confluent wire format.

    ``ids`` maps a topic to its schema id; ``by_id`` maps ids back to schema
    names. With a registry client, unknown topics and ids are resolved
    through it on first use and cached.
    """

    ids: dict[str, int]
    by_id: dict[int, str]
    registry: Any = None  # confluent_kafka.schema_registry.SchemaRegistryClient

    # -- construction ---------------------------------------------------------
    @classmethod
    def local(cls) -> "Serde":
        """Fixed ids 1..N in TOPIC_SCHEMAS order: replay without any service."""
        ids = {topic: i for i, topic in enumerate(TOPIC_SCHEMAS, start=1)}
        return cls(ids=ids, by_id={i: TOPIC_SCHEMAS[t] for t, i in ids.items()})

    @classmethod
    def from_registry_url(cls, url: str) -> "Serde":
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(ids={}, by_id={}, registry=SchemaRegistryClient({"url": url}))

    @classmethod
    def from_settings(cls, settings) -> "Serde":
        return cls.from_registry_url(settings.schema_registry_url)

    # -- ids -------------------------------------------------------------------
    def schema_id(self, topic: str) -> int:
        found = self.ids.get(topic)
        if found is not None:
            return found
        name = _schema_name_of(topic)
        if self.registry is None:
            base = next(t for t, n in TOPIC_SCHEMAS.items() if n == name)
            return self.ids[base]
        from confluent_kafka.schema_registry import Schema

        registered = self.registry.register_schema(subject_for(topic), Schema(schema_text(name), "AVRO"))
        schema_id = registered if isinstance(registered, int) else registered.schema_id
        self.ids[topic] = schema_id
        self.by_id[schema_id] = name
        return schema_id

    def _name_for_id(self, schema_id: int) -> str:
        name = self.by_id.get(schema_id)
        if name is not None:
            return name
        if self.registry is None:
            raise SerdeError(f"unknown schema id {schema_id} (local serde knows {sorted(self.by_id)})")
        text = self.registry.get_schema(schema_id).schema_str
        fullname = _fullname(json.loads(text))
        for candidate in set(TOPIC_SCHEMAS.values()):
            if _fullname(json.loads(schema_text(candidate))) == fullname:
                self.by_id[schema_id] = candidate
                return candidate
        raise SerdeError(f"schema id {schema_id} is {fullname}, which this version does not know")

    # -- encode / decode --------------------------------------------------------
    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        schema_id = self.schema_id(topic)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(_MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(buf, parsed_schema(self.by_id.get(schema_id) or _schema_name_of(topic)), record)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise SerdeError(f"record does not fit the schema of {topic}: {exc}") from exc
        return buf.getvalue()

    def encode_many(self, topic: str, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        schema_id = self.schema_id(topic)
        schema = parsed_schema(self.by_id.get(schema_id) or _schema_name_of(topic))
        header = _HEADER.pack(_MAGIC, schema_id)
        out = []
        writer = fastavro.schemaless_writer
        for record in records:
            buf = io.BytesIO()
            buf.write(header)
            writer(buf, schema, record)
            out.append(buf.getvalue())
        return out

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < 5 or data[0] != _MAGIC:
            raise SerdeError("not Confluent wire format (missing magic byte 0 and schema id)")
        _, schema_id = _HEADER.unpack_from(data)
        schema = parsed_schema(self._name_for_id(schema_id))
        try:
            return fastavro.schemaless_reader(io.BytesIO(data[5:]), schema, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise SerdeError(f"Avro body does not match schema id {schema_id}: {exc}") from exc

    def schema_name_for(self, data: bytes) -> str:
        _, schema_id = _HEADER.unpack_from(data)
        return self._name_for_id(schema_id)


def _fullname(schema: Mapping[str, Any]) -> str:
    ns = schema.get("namespace")
    return f"{ns}.{schema['name']}" if ns else schema["name"]


def to_json_value(value: Any) -> Any:
    """The JSON form of a decoded record (spec section 6): bytes as base64 strings."""
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


def deepcopy_schema(name: str) -> Any:
    """A mutable copy of a schema's JSON (for tests that evolve a schema)."""
    return copy.deepcopy(json.loads(schema_text(name)))
