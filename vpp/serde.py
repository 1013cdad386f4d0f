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
    "TombstoneError",
    "UnknownSchemaError",
    "WrongSchemaError",
    "RegistryUnavailable",
    "schema_text",
    "parsed_schema",
    "subject_for",
    "to_json_value",
    "registry_client",
    "register_schemas",
    "RegistrationError",
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
    "fleet.alerts": "fleet_alert",
    "fleet.events": "fleet_event",
    "device.command_acks": "device_command_ack",
}

_MAGIC = 0
_HEADER = struct.Struct(">bI")


class SerdeError(ValueError):
    """A message could not be encoded or decoded; the message says why. ``reason`` is its dead-letter code."""

    reason = "malformed_avro"


class TombstoneError(SerdeError):
    """A null value where a record belongs."""

    reason = "tombstone"


class UnknownSchemaError(SerdeError):
    """A schema id that the registry (or the local numbering) does not have."""

    reason = "unknown_schema"


class WrongSchemaError(SerdeError):
    """A record written with another topic's schema."""

    reason = "wrong_schema"


class RegistryUnavailable(RuntimeError):
    """The schema registry cannot be asked (down, refusing our credentials): a dependency, not a bad message.

    Raised after retries with backoff; it stops the flow, which resumes from its snapshot when restarted."""


#: Waits between attempts to reach the registry before a decode gives up with ``RegistryUnavailable``.
REGISTRY_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0)


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
    #: register a topic's schema on first use (needs a read-write registry identity); off: look it up only,
    #: as production serializers run (``auto.register.schemas=false``), and ``vpp schemas register`` registers
    auto_register: bool = False

    # -- construction ---------------------------------------------------------
    @classmethod
    def local(cls) -> "Serde":
        """Fixed ids 1..N in TOPIC_SCHEMAS order: replay without any service."""
        ids = {topic: i for i, topic in enumerate(TOPIC_SCHEMAS, start=1)}
        return cls(ids=ids, by_id={i: TOPIC_SCHEMAS[t] for t, i in ids.items()})

    @classmethod
    def from_registry_url(cls, url: str, *, user: str = "", password: str = "", auto_register: bool = False) -> "Serde":
        return cls(ids={}, by_id={}, registry=registry_client(url, user, password), auto_register=auto_register)

    @classmethod
    def from_settings(cls, settings) -> "Serde":
        """The registry serde under the settings' read-only identity, looking schemas up (no auto-registration)."""
        return cls.from_registry_url(settings.schema_registry_url, user=settings.schema_registry_user,
                                     password=settings.schema_registry_password)

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
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema = Schema(schema_text(name), "AVRO")
        if self.auto_register:
            registered = self.registry.register_schema(subject_for(topic), schema)
            schema_id = registered if isinstance(registered, int) else registered.schema_id
        else:
            try:
                schema_id = self.registry.lookup_schema(subject_for(topic), schema).schema_id
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
                raise SerdeError(f"schema {name}.avsc is not registered under {subject_for(topic)} "
                                 f"({exc.error_message}): register it with `vpp schemas register`") from exc
        self.ids[topic] = schema_id
        self.by_id[schema_id] = name
        return schema_id

    def _name_for_id(self, schema_id: int) -> str:
        name = self.by_id.get(schema_id)
        if name is not None:
            return name
        if self.registry is None:
            raise UnknownSchemaError(f"unknown schema id {schema_id} (local serde knows {sorted(self.by_id)})")
        text = self._registry_schema_text(schema_id)
        fullname = _fullname(json.loads(text))
        for candidate in set(TOPIC_SCHEMAS.values()):
            if _fullname(json.loads(schema_text(candidate))) == fullname:
                self.by_id[schema_id] = candidate
                return candidate
        raise UnknownSchemaError(f"schema id {schema_id} is {fullname}, which this version does not know")

    def _registry_schema_text(self, schema_id: int) -> str:
        """The registry's schema for an id; a 404 is a bad message, anything else a dependency to wait for."""
        import logging
        import time

        from confluent_kafka.schema_registry.error import SchemaRegistryError

        for attempt, wait_s in enumerate((*REGISTRY_RETRY_S, None)):
            try:
                return self.registry.get_schema(schema_id).schema_str
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    raise UnknownSchemaError(f"schema id {schema_id} is not in the schema registry") from None
                problem = f"HTTP {exc.http_status_code}: {exc.error_message}"
            except Exception as exc:  # connection refused, timeouts: whatever the HTTP client raises
                problem = f"{type(exc).__name__}: {exc}"
            if wait_s is None:
                raise RegistryUnavailable(f"the schema registry cannot be reached after {attempt} retries "
                                          f"({problem}); the flow stops and resumes from its snapshot")
            logging.getLogger(__name__).warning("schema registry unavailable (%s); retrying in %.1f s", problem, wait_s)
            time.sleep(wait_s)
        raise AssertionError("unreachable")

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

    def decode(self, data: bytes | None, topic: str | None = None) -> dict[str, Any]:
        """The record in ``data``; with ``topic``, also checks that it was written with that topic's schema.

        Every way a message can be bad raises a ``SerdeError`` whose ``reason`` is its dead-letter code; only
        an unreachable registry raises ``RegistryUnavailable``.
        """
        if data is None:
            raise TombstoneError("null value (a tombstone): this topic carries records, never deletions")
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise SerdeError(f"value is {type(data).__name__}, not bytes")
            data = bytes(data)
        if len(data) < 5 or data[0] != _MAGIC:
            raise SerdeError(f"not Confluent wire format (missing magic byte 0 and schema id; {len(data)} bytes)")
        _, schema_id = _HEADER.unpack_from(data)
        name = self._name_for_id(schema_id)
        if topic is not None:
            expected = _schema_name_of(topic)
            if name != expected:
                raise WrongSchemaError(f"schema id {schema_id} is {name}, but {topic} carries {expected} records")
        body = io.BytesIO(data)
        body.seek(5)
        try:
            record = fastavro.schemaless_reader(body, parsed_schema(name), None)
        except Exception as exc:  # junk or truncated bytes: fastavro raises EOF, Value, Index, Unicode, Overflow ...
            raise SerdeError(f"Avro body does not decode with schema id {schema_id} ({name}): "
                             f"{type(exc).__name__}: {exc}") from None
        if body.tell() != len(data):
            raise SerdeError(f"{len(data) - body.tell()} bytes follow the {name} record (schema id {schema_id})")
        return record

    def schema_name_for(self, data: bytes) -> str:
        _, schema_id = _HEADER.unpack_from(data)
        return self._name_for_id(schema_id)


def registry_client(url: str, user: str = "", password: str = "") -> Any:
    """A Confluent ``SchemaRegistryClient`` for ``url``, with basic auth when a password is given."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = {"url": url}
    if password:
        conf["basic.auth.user.info"] = f"{user}:{password}"
    return SchemaRegistryClient(conf)


def register_schemas(client: Any, topic_prefix: str = "") -> dict[str, int]:
    """Register every topic's schema under ``<prefix><topic>-value`` with ``client`` (a read-write identity).

    Returns subject -> schema id; raises ``RegistrationError`` naming the schema and subject the
    registry refused (``http_status`` 409: an incompatible change; 401/403: the identity).
    """
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    ids: dict[str, int] = {}
    for topic, name in TOPIC_SCHEMAS.items():
        subject = subject_for(topic_prefix + topic)
        try:
            registered = client.register_schema(subject, Schema(schema_text(name), "AVRO"))
        except SchemaRegistryError as exc:
            raise RegistrationError(name, subject, exc.http_status_code, exc.error_message) from exc
        ids[subject] = registered if isinstance(registered, int) else registered.schema_id
    return ids


class RegistrationError(SerdeError):
    """The registry refused a schema: which one, under which subject, its HTTP status and message."""

    def __init__(self, name: str, subject: str, http_status: int, message: str):
        super().__init__(f"registering {name}.avsc under {subject} failed: HTTP {http_status} {message}")
        self.name, self.subject, self.http_status, self.message = name, subject, http_status, message


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
