"""Avro in the Confluent wire format: our serde and confluent-kafka's own serializers agree."""

from __future__ import annotations

import json
import uuid

import fastavro
import pytest
from hypothesis import given, settings, strategies as st

from vpp.serde import TOPIC_SCHEMAS, Serde, SerdeError, schema_text

CANONICAL = {
    "device_id": "pw-000123", "site_id": "site-0042", "region_path": "us/ca/pge/94110/site-0042",
    "ts": 1795462199598, "dialect": "tesla-gateway/1", "soc_pct": 67.5, "battery_w": -2400.0, "solar_w": 3100.0,
    "load_w": 860.2, "grid_w": 160.2, "grid_connected": True, "capacity_wh": 13500.0, "flags": ["imbalance"],
}


def test_every_schema_parses_and_every_field_is_documented():
    for name in TOPIC_SCHEMAS.values():
        doc = json.loads(schema_text(name))
        assert doc["namespace"].startswith("io.vpp."), name
        assert all(f.get("doc") for f in doc["fields"]), name
        fastavro.parse_schema(doc)


def test_time_fields_use_the_timestamp_millis_logical_type():
    for name in TOPIC_SCHEMAS.values():
        for f in json.loads(schema_text(name))["fields"]:
            if f["name"] in ("ts", "start", "end", "at", "window_start", "window_end", "interval_start"):
                assert "timestamp-millis" in json.dumps(f["type"]), (name, f["name"])


def test_local_wire_format_is_magic_byte_then_schema_id():
    serde = Serde.local()
    data = serde.encode("telemetry.canonical", CANONICAL)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == serde.ids["telemetry.canonical"]
    assert serde.decode(data) == CANONICAL


def test_garbage_is_a_serde_error_not_a_crash():
    with pytest.raises(SerdeError):
        Serde.local().decode(b"not avro")
    with pytest.raises(SerdeError):
        Serde.local().decode(b"\x00\x00\x00\x00\x01\xff")


_opt_float = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({
    "device_id": st.text(min_size=1, max_size=64), "site_id": st.text(), "region_path": st.text(),
    "ts": st.integers(min_value=0, max_value=2**62), "dialect": st.text(),
    "soc_pct": _opt_float, "battery_w": _opt_float, "solar_w": _opt_float, "load_w": _opt_float, "grid_w": _opt_float,
    "grid_connected": st.one_of(st.none(), st.booleans()), "capacity_wh": _opt_float, "flags": st.lists(st.text()),
}))
def test_canonical_readings_round_trip(record):
    serde = Serde.local()
    assert serde.decode(serde.encode("telemetry.canonical", record)) == record


def test_confluent_deserializer_reads_what_we_write_and_vice_versa(stack):
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic = f"t{uuid.uuid4().hex[:8]}.telemetry.canonical"
    stack.registry_client(admin=True).register_schema(f"{topic}-value", Schema(schema_text("canonical_reading"), "AVRO"))
    ours = Serde.from_settings(stack.settings)  # the read-only identity: looks the schema up
    client = stack.registry_client()
    ctx = SerializationContext(topic, MessageField.VALUE)
    theirs_in = AvroDeserializer(client)
    decoded = theirs_in(ours.encode(topic, CANONICAL), ctx)
    assert decoded["device_id"] == "pw-000123" and decoded["ts"].timestamp() * 1000 == pytest.approx(CANONICAL["ts"])
    theirs_out = AvroSerializer(client, schema_text("canonical_reading"), conf={"auto.register.schemas": False})
    assert ours.decode(theirs_out(decoded, ctx)) == CANONICAL


def test_the_read_only_serde_does_not_register_a_missing_schema_and_says_how_to(stack):
    topic = f"t{uuid.uuid4().hex[:8]}.telemetry.canonical"
    with pytest.raises(SerdeError, match="not registered under .*vpp schemas register"):
        Serde.from_settings(stack.settings).encode(topic, CANONICAL)
    assert f"{topic}-value" not in stack.registry_client().get_subjects()
