"""The registry against a real PostgreSQL and the real confluent-kafka client.

Each test gets a fresh database and server (``registry_url``). Raw HTTP checks
pin the exact statuses and bodies Confluent's clients rely on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

READING_V1 = {
    "type": "record",
    "name": "Reading",
    "namespace": "vpp.test",
    "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "soc_pct", "type": "int"},
    ],
}
READING_V2_OPTIONAL = {  # adds a field with a default: BACKWARD compatible
    **READING_V1,
    "fields": READING_V1["fields"] + [{"name": "power_w", "type": ["null", "double"], "default": None}],
}
READING_V2_REQUIRED = {  # adds a field without a default: not BACKWARD compatible
    **READING_V1,
    "fields": READING_V1["fields"] + [{"name": "power_w", "type": "double"}],
}
READING_SOC_AS_STRING = {  # int -> string: incompatible both ways
    **READING_V1,
    "fields": [{"name": "device_id", "type": "string"}, {"name": "soc_pct", "type": "string"}],
}


def avro(schema: dict) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


def http(url: str, method: str = "GET", body: Any = None, content_type: str = "application/vnd.schemaregistry.v1+json"):
    """(status, content type, decoded JSON body) of one raw request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], json.loads(err.read())


@pytest.fixture
def client(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


# -- the client's everyday calls ---------------------------------------------------------


def test_register_then_read_back_by_id_latest_and_lookup(client, subject):
    schema_id = client.register_schema(subject, avro(READING_V1))

    assert json.loads(client.get_schema(schema_id).schema_str) == READING_V1
    latest = client.get_latest_version(subject)
    assert (latest.subject, latest.version, latest.schema_id) == (subject, 1, schema_id)
    assert json.loads(latest.schema.schema_str) == READING_V1
    found = client.lookup_schema(subject, avro(READING_V1))
    assert (found.schema_id, found.version) == (schema_id, 1)
    assert client.get_subjects(subject_prefix=subject) == [subject]
    assert client.get_versions(subject) == [1]


def test_re_registering_the_same_schema_is_idempotent(registry_url, subject):
    first = SchemaRegistryClient({"url": registry_url}).register_schema(subject, avro(READING_V1))
    # a fresh client has no cache, so this really reaches the server; whitespace differs too
    status, _, body = http(
        f"{registry_url}/subjects/{subject}/versions", "POST", {"schema": json.dumps(READING_V1, indent=2)}
    )
    assert status == 200 and body["id"] == first
    assert SchemaRegistryClient({"url": registry_url}).get_versions(subject) == [1]


def test_the_same_schema_under_two_subjects_gets_the_same_id(fresh_registry_url):
    client = SchemaRegistryClient({"url": fresh_registry_url})
    a = client.register_schema("site-a-value", avro(READING_V1))
    b = client.register_schema("site-b-value", avro(READING_V1))
    other = client.register_schema("site-b-value", avro(READING_V2_OPTIONAL))

    assert a == b != other
    usages = {(v.subject, v.version) for v in client.get_schema_versions(a)}
    assert usages == {("site-a-value", 1), ("site-b-value", 1)}


def test_serializer_and_deserializer_round_trip_through_the_registry(client):
    topic = f"telemetry.{uuid.uuid4().hex[:12]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, json.dumps(READING_V1))
    record = {"device_id": "bat-1", "soc_pct": 57}

    payload = serializer(record, ctx)

    assert payload[0] == 0  # Confluent framing: magic byte, then the 4-byte schema id
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id
    fresh_client = SchemaRegistryClient({"url": client.config()["url"]})  # fetches the writer schema by id
    assert AvroDeserializer(fresh_client)(payload, ctx) == record


def test_a_backward_compatible_evolution_becomes_version_2(client, subject):
    client.register_schema(subject, avro(READING_V1))

    assert client.test_compatibility(subject, avro(READING_V2_OPTIONAL)) is True
    client.register_schema(subject, avro(READING_V2_OPTIONAL))
    assert client.get_versions(subject) == [1, 2]
    assert client.get_latest_version(subject).version == 2


@pytest.mark.parametrize("incompatible", [READING_V2_REQUIRED, READING_SOC_AS_STRING], ids=["new-required-field", "int-to-string"])
def test_an_incompatible_schema_is_rejected_with_409(client, subject, incompatible):
    client.register_schema(subject, avro(READING_V1))

    assert client.test_compatibility(subject, avro(incompatible)) is False
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, avro(incompatible))
    assert caught.value.http_status_code == 409
    assert caught.value.error_code == 409
    assert f'incompatible with an earlier schema for subject "{subject}"' in caught.value.error_message
    assert client.get_versions(subject) == [1]


def test_verbose_compatibility_check_explains_the_problem(registry_url, client, subject):
    client.register_schema(subject, avro(READING_V1))

    status, _, body = http(
        f"{registry_url}/compatibility/subjects/{subject}/versions/latest?verbose=true",
        "POST",
        {"schema": json.dumps(READING_V2_REQUIRED)},
    )
    assert status == 200 and body["is_compatible"] is False
    assert len(body["messages"]) == 1 and "power_w" in body["messages"][0] and "default" in body["messages"][0]
    _, _, quiet = http(
        f"{registry_url}/compatibility/subjects/{subject}/versions/1", "POST", {"schema": json.dumps(READING_V2_OPTIONAL)}
    )
    assert quiet == {"is_compatible": True}


def test_compatibility_levels_global_and_per_subject(fresh_registry_url, subject):
    client = SchemaRegistryClient({"url": fresh_registry_url})
    assert client.get_compatibility() == "BACKWARD"
    assert client.set_compatibility(level="FULL") == {"compatibility": "FULL"}
    assert client.get_compatibility() == "FULL"
    client.set_compatibility(subject, "forward_transitive")
    assert client.get_compatibility(subject) == "FORWARD_TRANSITIVE"
    assert client.delete_config(subject).compatibility_level.value == "FORWARD_TRANSITIVE"
    with pytest.raises(SchemaRegistryError) as caught:
        client.get_compatibility(subject)
    assert (caught.value.http_status_code, caught.value.error_code) == (404, 40408)


def test_subject_config_can_default_to_global(registry_url, subject):
    assert http(f"{registry_url}/config/{subject}?defaultToGlobal=true") == (
        200,
        "application/vnd.schemaregistry.v1+json",
        {"compatibilityLevel": "BACKWARD"},
    )


def test_none_level_accepts_anything(client, subject):
    client.set_compatibility(subject, "NONE")
    client.register_schema(subject, avro(READING_V1))
    client.register_schema(subject, avro(READING_SOC_AS_STRING))
    client.register_schema(subject, avro({"type": "array", "items": "long"}))
    assert client.get_versions(subject) == [1, 2, 3]


def test_forward_level_rejects_removing_a_field_old_readers_need(client, subject):
    client.set_compatibility(subject, "FORWARD")
    client.register_schema(subject, avro(READING_V2_REQUIRED))
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, avro(READING_V1))  # drops power_w, which v1 readers require
    assert caught.value.error_code == 409


def test_transitive_level_checks_every_earlier_version(client, subject):
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    v2 = {"type": "record", "name": "R", "fields": []}
    v3 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "default": ""}]}
    client.register_schema(f"{subject}-plain", avro(v1))
    client.register_schema(f"{subject}-plain", avro(v2))
    client.register_schema(f"{subject}-transitive", avro(v1))
    client.register_schema(f"{subject}-transitive", avro(v2))
    client.set_compatibility(f"{subject}-transitive", "BACKWARD_TRANSITIVE")

    client.register_schema(f"{subject}-plain", avro(v3))  # only checked against v2
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(f"{subject}-transitive", avro(v3))  # v1 wrote "a" as an int
    assert caught.value.error_code == 409 and "version 1" in caught.value.error_message


def test_concurrent_registrations_share_one_id_and_one_version(registry_url, subject):
    ids: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            ids.append(SchemaRegistryClient({"url": registry_url}).register_schema(subject, avro(READING_V1)))
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 1
    assert SchemaRegistryClient({"url": registry_url}).get_versions(subject) == [1]


def test_concurrent_registrations_under_many_subjects_share_one_id(registry_url, subject):
    subjects = [f"{subject}-{i}" for i in range(8)]
    ids: dict[str, int] = {}

    def register(name: str) -> None:
        ids[name] = SchemaRegistryClient({"url": registry_url}).register_schema(name, avro(READING_V2_OPTIONAL))

    threads = [threading.Thread(target=register, args=(name,)) for name in subjects]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == subjects and len(set(ids.values())) == 1


def test_schema_id_and_version_side_endpoints(registry_url, client, subject):
    schema_id = client.register_schema(subject, avro(READING_V1))
    client.register_schema(subject, avro(READING_V2_OPTIONAL))

    assert http(f"{registry_url}/schemas/types")[2] == ["AVRO"]
    assert subject in http(f"{registry_url}/schemas/ids/{schema_id}/subjects")[2]  # other tests share READING_V1
    assert http(f"{registry_url}/subjects/{subject}/versions/latest/schema")[2] == READING_V2_OPTIONAL
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.get_versions(subject, deleted=True) == [1, 2]


def test_delete_subject_soft_then_permanent(client, subject):
    client.register_schema(subject, avro(READING_V1))
    client.register_schema(subject, avro(READING_V2_OPTIONAL))

    assert client.delete_subject(subject) == [1, 2]
    assert client.get_subjects(subject_prefix=subject) == []
    assert client.get_subjects(subject_prefix=subject, deleted=True) == [subject]
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    assert client.get_subjects(subject_prefix=subject, deleted=True) == []


# -- exact errors over raw HTTP ------------------------------------------------------


def test_root_answers_an_empty_object(registry_url):
    assert http(f"{registry_url}/") == (200, "application/vnd.schemaregistry.v1+json", {})


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_code"),
    [
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/subjects/{subject}/versions/7", None, 404, 40402),
        ("GET", "/subjects/{subject}/versions/zero", None, 422, 42202),
        ("GET", "/schemas/ids/999", None, 404, 40403),
        ("POST", "/subjects/nope", {"schema": json.dumps(READING_V1)}, 404, 40401),
        ("POST", "/subjects/{subject}", {"schema": json.dumps(READING_V2_OPTIONAL)}, 404, 40403),
        ("POST", "/subjects/{subject}/versions", {"schema": '{"type": "record", "name": "X", "fields": [{"name": "a"'}, 422, 42201),
        ("POST", "/subjects/{subject}/versions", {"schema": '{"type": "integer"}'}, 422, 42201),
        ("PUT", "/config", {"compatibility": "SIDEWAYS"}, 422, 42203),
        ("GET", "/config/{subject}", None, 404, 40408),
    ],
)
def test_error_statuses_and_codes(registry_url, client, subject, method, path, body, status, error_code):
    client.register_schema(subject, avro(READING_V1))

    got_status, content_type, got = http(registry_url + path.format(subject=subject), method, body)

    assert (got_status, got["error_code"]) == (status, error_code)
    assert content_type == "application/vnd.schemaregistry.v1+json"
    assert isinstance(got["message"], str) and got["message"]


def test_invalid_schema_is_a_422_for_the_client_too(client, subject):
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, Schema('{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "AVRO"))
    assert (caught.value.http_status_code, caught.value.error_code) == (422, 42201)


def test_only_avro_without_references_is_accepted(registry_url, subject):
    status, _, body = http(
        f"{registry_url}/subjects/{subject}/versions", "POST", {"schema": '{"type": "object"}', "schemaType": "JSON"}
    )
    assert status == 422 and "only supports AVRO" in body["message"]
    status, _, body = http(
        f"{registry_url}/subjects/{subject}/versions",
        "POST",
        {"schema": '"string"', "references": [{"name": "x", "subject": "y", "version": 1}]},
    )
    assert status == 422 and "references are not supported" in body["message"]


def test_plain_application_json_bodies_are_accepted(registry_url, subject):
    status, _, body = http(
        f"{registry_url}/subjects/{subject}/versions", "POST", {"schema": '"string"', "references": []}, content_type="application/json"
    )
    assert status == 200 and isinstance(body["id"], int)
    assert http(f"{registry_url}/subjects/{subject}/versions/1/schema")[2] == "string"


# -- the command line -------------------------------------------------------------------


def test_cli_serves_until_sigterm(registry_database):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp.registry", "--host", "127.0.0.1", "--port", "0", "--dsn", registry_database],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("schema registry listening on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.rsplit(" ", 1)[-1].strip()
        assert http(f"{url}/subjects") == (200, "application/vnd.schemaregistry.v1+json", [])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
