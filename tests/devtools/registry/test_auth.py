"""Who may use the registry: basic auth, a read-only and a read-write identity, Confluent's 401/403 bodies.

Against a registry served in-process with both identities over a fresh database, and the
``python -m devtools.registry`` command with its credentials in files and its DSN in the environment.
"""

from __future__ import annotations

import json

import httpx
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from devtools.registry import RegistryServer
from devtools.registry.auth import READ, WRITE, Identity
from registry_command import registry_process, serving
from vpp.serde import registry_client

READER, WRITER = Identity("reader", "r-secret-1", READ), Identity("writer", "w-secret-2", WRITE)
SCHEMA = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]})
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@pytest.fixture
def secured_url(registry_database):
    with RegistryServer("127.0.0.1", 0, registry_database, identities={"reader": READER, "writer": WRITER}) as server:
        registry_client(server.url, WRITER.user, WRITER.password).register_schema("known-value", Schema(SCHEMA, "AVRO"))
        yield server.url


def call(url: str, method: str, path: str, who: Identity | None = None, body=None) -> httpx.Response:
    auth = (who.user, who.password) if who else None
    return httpx.request(method, url + path, auth=auth, timeout=10, headers={"Content-Type": CONTENT_TYPE},
                         content=None if body is None else json.dumps(body))


WRITES = [
    ("POST", "/subjects/new-value/versions", {"schema": SCHEMA}),
    ("PUT", "/config", {"compatibility": "NONE"}),
    ("PUT", "/config/known-value", {"compatibility": "NONE"}),
    ("DELETE", "/config", None),
    ("DELETE", "/subjects/known-value", None),
    ("DELETE", "/subjects/known-value/versions/1", None),
]
READS = [
    ("GET", "/subjects", None, 200),
    ("GET", "/subjects/known-value/versions/latest", None, 200),
    ("GET", "/schemas/ids/1", None, 200),
    ("GET", "/config", None, 200),
    ("POST", "/subjects/known-value", {"schema": SCHEMA}, 200),  # a lookup reads
    ("POST", "/compatibility/subjects/known-value/versions/latest", {"schema": SCHEMA}, 200),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_writes_need_the_read_write_identity(secured_url, method, path, body):
    anonymous = call(secured_url, method, path, body=body)
    assert (anonymous.status_code, anonymous.json()["error_code"]) == (401, 40101)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic") and anonymous.headers["content-type"] == CONTENT_TYPE
    forbidden = call(secured_url, method, path, READER, body)
    assert (forbidden.status_code, forbidden.json()["error_code"]) == (403, 40301)
    assert "may only read" in forbidden.json()["message"]
    assert call(secured_url, "GET", "/subjects/known-value/versions", READER).json() == [1]  # nothing changed
    assert call(secured_url, method, path, WRITER, body).status_code == 200


@pytest.mark.parametrize(("method", "path", "body", "status"), READS, ids=[f"{m} {p}" for m, p, _, _ in READS])
def test_reads_need_an_identity_and_the_read_only_one_is_enough(secured_url, method, path, body, status):
    assert call(secured_url, method, path, body=body).status_code == 401
    assert call(secured_url, method, path, READER, body).status_code == status
    assert call(secured_url, method, path, WRITER, body).status_code == status


@pytest.mark.parametrize("who", [Identity("reader", "wrong", READ), Identity("nobody", "r-secret-1", READ),
                                 Identity("writer", "", WRITE)], ids=["wrong password", "unknown user", "no password"])
def test_wrong_credentials_are_a_401(secured_url, who):
    response = httpx.get(secured_url + "/subjects", auth=(who.user, who.password), timeout=10)
    assert (response.status_code, response.json()["error_code"]) == (401, 40101)


@pytest.mark.parametrize("header", ["Bearer r-secret-1", "Basic not-base64!", "Basic cmVhZGVy"])  # last: "reader", no colon
def test_malformed_authorization_is_a_401(secured_url, header):
    assert httpx.get(secured_url + "/subjects", headers={"Authorization": header}, timeout=10).status_code == 401


def test_the_root_answers_anyone_for_probes(secured_url):
    assert httpx.get(secured_url + "/", timeout=10).status_code == 200


def test_confluent_s_client_as_the_read_only_identity_reads_and_cannot_register(secured_url):
    client = registry_client(secured_url, READER.user, READER.password)
    assert client.get_subjects() == ["known-value"]
    assert client.lookup_schema("known-value", Schema(SCHEMA, "AVRO")).version == 1
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema("other-value", Schema(SCHEMA, "AVRO"))
    assert (caught.value.http_status_code, caught.value.error_code) == (403, 40301)


# -- the command ----------------------------------------------------------------------------------------


def test_the_command_takes_its_dsn_and_passwords_from_the_environment_and_files_not_its_argv(registry_database, tmp_path):
    (tmp_path / "read").write_text("file-read-pw\n")
    (tmp_path / "write").write_text("file-write-pw\n")
    proc = registry_process(tmp_path, {"VPP_POSTGRES_DSN": registry_database,
                                       "VPP_SCHEMA_REGISTRY_PASSWORD_FILE": str(tmp_path / "read"),
                                       "VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD_FILE": str(tmp_path / "write")})
    with serving(proc) as url:
        argv = (open(f"/proc/{proc.pid}/cmdline", "rb").read()).decode()
        assert "pw" not in argv and "postgres" not in argv  # nothing secret for ps to show
        assert httpx.get(url + "/subjects", timeout=10).status_code == 401
        assert httpx.get(url + "/subjects", auth=("vpp-reader", "file-read-pw"), timeout=10).json() == []
        created = httpx.post(url + "/subjects/x-value/versions", auth=("vpp-admin", "file-write-pw"), timeout=10,
                             json={"schema": SCHEMA})
        assert created.status_code == 200


def test_the_command_refuses_to_run_open_unless_told(tmp_path):
    proc = registry_process(tmp_path, {"VPP_POSTGRES_DSN": "postgresql://postgres@127.0.0.1:1/vpp"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "no identity configured" in err and "--no-auth" in err


def test_a_password_in_the_dsn_never_reaches_the_output(tmp_path):
    proc = registry_process(tmp_path, {"VPP_POSTGRES_DSN": "postgresql://registry:Sup3r-Secret@127.0.0.1:1/vpp",
                                       "VPP_SCHEMA_REGISTRY_PASSWORD": "p1", "VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD": "p2"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "cannot use PostgreSQL at postgresql://registry:***@127.0.0.1:1/vpp" in err
    assert "Sup3r-Secret" not in out + err


def test_backend_errors_are_redacted():
    from devtools.registry.server import _without_secrets

    dsn = "host=db user=registry password=Sup3r-Secret dbname=vpp"
    message = _without_secrets(f"OperationalError: cannot connect with {dsn} (password Sup3r-Secret refused)", dsn)
    assert "Sup3r-Secret" not in message and "password=***" in message
