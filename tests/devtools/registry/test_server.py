"""The registry against a real PostgreSQL and the real confluent-kafka client.

Each test gets a fresh database and server (``registry_url``). Raw HTTP checks
pin the exact statuses and bodies Confluent's clients rely on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from registry_command import registry_process, serving
from raw_http import send_until_closed

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
    response = httpx.request(method, url, content=data, headers={"Content-Type": content_type}, timeout=10)
    return response.status_code, response.headers["Content-Type"], response.json()


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


def test_soft_deleting_a_soft_deleted_version_is_40406(registry_url, client, subject):
    client.register_schema(subject, avro(READING_V1))
    client.register_schema(subject, avro(READING_V2_OPTIONAL))
    assert client.delete_version(subject, 2) == 2

    status, _, body = http(f"{registry_url}/subjects/{subject}/versions/2", "DELETE")
    assert (status, body["error_code"]) == (404, 40406)
    assert "was soft deleted" in body["message"] and "permanent=true" in body["message"]
    assert http(f"{registry_url}/subjects/{subject}/versions/2?permanent=true", "DELETE")[:1] == (200,)
    assert http(f"{registry_url}/subjects/{subject}/versions/2", "DELETE")[2]["error_code"] == 40402  # now gone


def test_soft_deleting_latest_deletes_the_latest_live_version(registry_url, client, subject):
    client.register_schema(subject, avro(READING_V1))
    client.register_schema(subject, avro(READING_V2_OPTIONAL))

    assert http(f"{registry_url}/subjects/{subject}/versions/latest", "DELETE")[2] == 2
    assert http(f"{registry_url}/subjects/{subject}/versions/latest", "DELETE")[2] == 1
    status, _, body = http(f"{registry_url}/subjects/{subject}/versions/latest", "DELETE")
    assert (status, body["error_code"]) == (404, 40406)  # every version is soft deleted, as in Confluent


# (rule broken, Avro schema) registered over HTTP under compatibility NONE: each a 422 / 42201
INVALID_OVER_HTTP = [
    ("fixed size negative", {"type": "fixed", "name": "F", "size": -1}),
    ("fixed size not a number", {"type": "fixed", "name": "F2", "size": "abc"}),
    ("enum symbols not names", {"type": "enum", "name": "E", "symbols": ["a b"]}),
    ("namespace not dotted names", {"type": "record", "name": "T", "namespace": "bad ns!", "fields": []}),
    ("dotted name with a bad part", {"type": "record", "name": "a..T", "fields": []}),
    ("union default not of the first branch", {"type": "record", "name": "U", "fields": [{"name": "a", "type": ["null", "int"], "default": 5}]}),
    ("record field not an object", {"type": "record", "name": "T", "fields": ["a"]}),
    ("schema JSON not an object, name or union", 5),
]


@pytest.mark.parametrize("schema", [s for _, s in INVALID_OVER_HTTP], ids=[n for n, _ in INVALID_OVER_HTTP])
def test_invalid_avro_is_422_even_under_compatibility_none(registry_url, subject, schema):
    assert http(f"{registry_url}/config/{subject}", "PUT", {"compatibility": "NONE"})[0] == 200

    status, content_type, body = http(f"{registry_url}/subjects/{subject}/versions", "POST", {"schema": json.dumps(schema)})

    assert (status, body["error_code"]) == (422, 42201), body
    assert content_type == "application/vnd.schemaregistry.v1+json"
    assert body["message"].startswith("Invalid schema")
    assert http(f"{registry_url}/subjects/{subject}/versions")[0] == 404  # nothing was registered


# -- HTTP framing and methods, over a raw socket ------------------------------------------


def raw_exchange(url: str, request: bytes, *, responses: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``request`` bytes as-is on one connection; read ``responses`` answers (status, headers, body)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        answers = []
        for _ in range(responses):
            status_line = stream.readline()
            assert status_line, "connection closed before an answer"
            headers: dict[str, str] = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            head_answer = request.startswith(b"HEAD") and not answers  # only the first request here is ever a HEAD
            body = stream.read(length) if not head_answer else b""
            answers.append((int(status_line.split()[1]), headers, body))
        return answers


def closes_after(url: str, request: bytes) -> bool:
    """Whether the server closes the connection after its one answer to ``request``."""
    return send_until_closed(url, request).startswith(b"HTTP/1.1 ")  # the read ended with b"": closed, not timed out


def post(subject: str, headers: str, body: bytes) -> bytes:
    return (
        f"POST /subjects/{subject}/versions HTTP/1.1\r\nHost: registry\r\n"
        f"Content-Type: application/vnd.schemaregistry.v1+json\r\n{headers}\r\n"
    ).encode() + body


SCHEMA_BODY = json.dumps({"schema": '"string"'}).encode()


# (case, framing headers, body bytes, status, JSON error code or None): every one answered, then the connection
# closes. uvicorn (h11) frames requests: what it cannot delimit is its plain-text 400 (the hand-written
# server answered JSON 400/501 before); a declared body beyond the limit is our JSON 413, and both
# Content-Length and chunked our JSON 400.
BAD_FRAMING = [
    ("Content-Length not a number", "Content-Length: abc\r\n", SCHEMA_BODY, 400, None),
    ("Content-Length negative", "Content-Length: -5\r\n", SCHEMA_BODY, 400, None),
    ("two different Content-Lengths", "Content-Length: 2\r\nContent-Length: 3\r\n", b"{}", 400, None),
    ("Content-Length beyond the limit", "Content-Length: 999999999999\r\n", b"", 413, 413),
    ("unsupported transfer coding", "Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n", 400, None),
    ("chunk size not hex", "Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n", 400, None),
    ("chunk not followed by CRLF", "Transfer-Encoding: chunked\r\n", b"2\r\n{}XX0\r\n\r\n", 400, None),
    # RFC 9112 6.3: a smuggling attempt; refused by our BodyLimits (h11 alone reads it as chunked, keeps it open)
    ("both Content-Length and chunked", "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n",
     400, 400),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "error_code"), [c[1:] for c in BAD_FRAMING], ids=[c[0] for c in BAD_FRAMING]
)
def test_a_body_that_cannot_be_delimited_is_a_4xx_and_the_connection_closes(registry_url, subject, headers, body, status, error_code):
    [(got_status, got_headers, got_body)] = raw_exchange(registry_url, post(subject, headers, body))

    assert got_status == status
    if error_code is not None:
        assert json.loads(got_body)["error_code"] == error_code
        assert got_headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert closes_after(registry_url, post(subject, headers, body))


def test_a_body_over_the_limit_while_it_streams_is_a_json_413(registry_url, subject):
    from devtools.registry.server import MAX_BODY_BYTES

    chunk = b"x" * (1024 * 1024)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 1))
    [(status, headers, body)] = raw_exchange(registry_url, post(subject, "Transfer-Encoding: chunked\r\n", chunked))

    assert (status, json.loads(body)["error_code"]) == (413, 413)
    assert headers["connection"] == "close"


def test_a_chunked_body_is_read_and_the_connection_stays_usable(registry_url, subject):
    schema = json.dumps({"schema": json.dumps(READING_V1)}).encode()
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(schema[i : i + 7]), schema[i : i + 7]) for i in range(0, len(schema), 7))
    chunked += b"0\r\nX-Trailer: ignored\r\n\r\n"
    lookup = f"GET /subjects/{subject}/versions HTTP/1.1\r\nHost: registry\r\n\r\n".encode()

    (status, _, body), (next_status, _, next_body) = raw_exchange(
        registry_url, post(subject, "Transfer-Encoding: chunked\r\n", chunked) + lookup, responses=2
    )

    assert status == 200 and json.loads(body)["version"] == 1
    assert (next_status, json.loads(next_body)) == (200, [1])  # the chunk bytes were not taken for a request


def test_an_empty_chunked_body_is_an_empty_schema_not_a_framing_error(registry_url, subject):
    [(status, _, body)] = raw_exchange(registry_url, post(subject, "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"))
    assert (status, json.loads(body)["error_code"]) == (422, 42201)


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "TRACE", "PUT", "BREW"])
def test_methods_no_route_takes_are_a_json_405_with_allow(registry_url, subject, method):
    request = f"{method} /subjects/{subject}/versions HTTP/1.1\r\nHost: registry\r\nContent-Length: 0\r\n\r\n".encode()
    follow_up = f"GET /subjects/{subject}/versions HTTP/1.1\r\nHost: registry\r\n\r\n".encode()

    (status, headers, body), (next_status, _, _) = raw_exchange(registry_url, request + follow_up, responses=2)

    assert status == 405 and headers["allow"] == "GET, HEAD, POST"
    assert headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert json.loads(body)["error_code"] == 405
    assert next_status == 404  # the keep-alive connection is still in step: unknown subject


def test_head_is_a_get_without_a_body(registry_url, subject):
    request = f"HEAD /subjects/{subject}/versions HTTP/1.1\r\nHost: registry\r\n\r\n".encode()
    follow_up = f"GET /subjects/{subject}/versions HTTP/1.1\r\nHost: registry\r\n\r\n".encode()

    (status, headers, body), (next_status, _, next_body) = raw_exchange(registry_url, request + follow_up, responses=2)

    assert (status, body) == (404, b"")  # the GET's status and headers; no body, so the next answer is read right
    assert headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert next_status == 404 and json.loads(next_body)["error_code"] == 40401


def test_a_request_head_beyond_the_header_limit_is_a_400_and_the_connection_closes(registry_url):
    request = b"GET /subjects HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"  # uvicorn's h11 limit: 16 KiB

    [(status, headers, _)] = raw_exchange(registry_url, request)

    assert status == 400 and headers["connection"] == "close"


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "one byte at a time"])
def test_a_connection_that_does_not_complete_its_request_head_in_time_is_closed(registry_database, trickle):
    from vpp.asgi import ServerLimits
    from devtools.registry import RegistryServer

    head = b"GET /subjects HTTP/1.1\r\nHost: registry\r\nX-Slow: " + b"a" * 200
    with RegistryServer("127.0.0.1", 0, registry_database, limits=ServerLimits(header_timeout_s=0.5)) as server:
        parts = urlsplit(server.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            started = time.monotonic()
            sent = 0
            try:
                while sent < len(head):  # well within the head's size limit, but slower than the deadline
                    sock.sendall(head[sent : sent + 1] if trickle else head[sent:])
                    sent += 1 if trickle else len(head)
                    time.sleep(0.05)
                closed = sock.recv(1024) == b""
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            assert closed and time.monotonic() - started < 5
        assert http(f"{server.url}/subjects")[0] == 200  # the server itself serves on


# -- the command line -------------------------------------------------------------------


def test_cli_serves_until_sigterm(registry_database, tmp_path):
    with serving(registry_process(tmp_path, {}, "--dsn", registry_database, "--no-auth")) as url:
        assert http(f"{url}/subjects") == (200, "application/vnd.schemaregistry.v1+json", [])


def test_a_kept_alive_connection_may_wait_longer_than_the_header_timeout_between_requests(registry_database):
    from vpp.asgi import ServerLimits
    from devtools.registry import RegistryServer

    request = b"GET /subjects HTTP/1.1\r\nHost: registry\r\n\r\n"
    with RegistryServer("127.0.0.1", 0, registry_database, limits=ServerLimits(header_timeout_s=0.3)) as server:
        parts = urlsplit(server.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            stream = sock.makefile("rb")
            for _ in range(2):
                sock.sendall(request)
                assert stream.readline().startswith(b"HTTP/1.1 200")
                while stream.readline() not in (b"\r\n", b""):
                    pass
                assert stream.read(2) == b"[]"
                time.sleep(0.8)  # idle between requests: uvicorn's keep-alive timeout applies, not the header timeout
