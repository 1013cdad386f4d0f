"""`vpp schemas register`: every topic's schema under TopicNameStrategy subjects; an incompatible change fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from vpp.serde import TOPIC_SCHEMAS, schema_text


def register(stack, prefix: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VPP_SCHEMA_REGISTRY_URL": stack.schema_registry_url, "VPP_TOPIC_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "cli", "schemas", "register"], capture_output=True, text=True,
                          env=env, timeout=60)


def test_registers_every_topic_once_and_again_harmlessly(stack):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    first = register(stack, prefix)
    assert first.returncode == 0, first.stderr
    client = SchemaRegistryClient({"url": stack.schema_registry_url})
    subjects = {s for s in client.get_subjects() if s.startswith(prefix)}
    assert subjects == {f"{prefix}{topic}-value" for topic in TOPIC_SCHEMAS}
    again = register(stack, prefix)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert all(client.get_latest_version(s).version == 1 for s in subjects)


def test_an_incompatible_change_is_refused(stack):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    subject = f"{prefix}telemetry.canonical-value"
    older = json.loads(schema_text("canonical_reading"))
    for field in older["fields"]:
        if field["name"] == "ts":
            field["type"] = "string"  # data written with this cannot be read as a long: BACKWARD-incompatible
    SchemaRegistryClient({"url": stack.schema_registry_url}).register_schema(subject, Schema(json.dumps(older), "AVRO"))
    result = register(stack, prefix)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"schema canonical_reading.avsc is incompatible with the registered {subject}" in result.stderr
