"""`vpp schemas register`: every topic's schema under TopicNameStrategy subjects; an incompatible change fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.schema_registry import Schema

from vpp.serde import TOPIC_SCHEMAS, schema_text


def register(stack, prefix: str, **env: str) -> subprocess.CompletedProcess:
    """``vpp schemas register`` with the stack's settings (its credentials from the state dir) and ``env``."""
    env = {**os.environ, "VPP_STATE_DIR": str(stack.state_dir), "VPP_TOPIC_PREFIX": prefix, **env}
    return subprocess.run([sys.executable, "-m", "cli", "schemas", "register"], capture_output=True, text=True,
                          env=env, timeout=60)


def test_registers_every_topic_once_and_again_harmlessly(stack):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    first = register(stack, prefix)
    assert first.returncode == 0, first.stderr
    client = stack.registry_client()
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
    stack.registry_client(admin=True).register_schema(subject, Schema(json.dumps(older), "AVRO"))
    result = register(stack, prefix)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"schema canonical_reading.avsc is incompatible with the registered {subject}" in result.stderr


@pytest.mark.parametrize(("identity", "status"), [("read-only", 403), ("wrong password", 401)])
def test_registering_needs_the_read_write_identity(stack, identity, status):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    s = stack.settings
    user, password = ((s.schema_registry_user, s.schema_registry_password) if identity == "read-only"
                      else (s.schema_registry_admin_user, "not-the-password"))
    result = register(stack, prefix, VPP_SCHEMA_REGISTRY_ADMIN_USER=user, VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD=password)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"the registry refused user {user!r} (HTTP {status}" in result.stderr
    assert password not in result.stderr + result.stdout
    assert not [x for x in stack.registry_client().get_subjects() if x.startswith(prefix)]
