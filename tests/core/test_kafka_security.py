"""Every Kafka client's TLS and SASL settings come from the settings object, through one function.

``vpp.kafka_security.client_config`` is what every producer, consumer and admin client starts from;
``security_config`` is its security part for bytewax's Kafka input (``add_config``). Settings that
cannot work (SASL without a password, PLAIN in clear, a CA file without TLS) are refused at load.
"""

from __future__ import annotations

import pytest

from vpp.config import ConfigError, Settings
from vpp.kafka_security import client_config, security_config


def _settings(**values) -> Settings:
    return Settings._coerce(values)


@pytest.mark.parametrize("values, expected", [
    ({}, {}),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/etc/vpp/kafka/ca.pem"},
     {"security.protocol": "SSL", "ssl.ca.location": "/etc/vpp/kafka/ca.pem",
      "ssl.endpoint.identification.algorithm": "https"}),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "vpp-dispatch", "kafka_sasl_password": "pw"},
     {"security.protocol": "SASL_SSL", "ssl.endpoint.identification.algorithm": "https",
      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "vpp-dispatch", "sasl.password": "pw"}),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-256",
      "kafka_sasl_username": "u", "kafka_sasl_password": "pw"},
     {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "u",
      "sasl.password": "pw"}),
])
def test_the_security_settings_become_librdkafka_settings(values, expected) -> None:
    settings = _settings(broker="kafka:9093", **values)
    assert security_config(settings) == expected
    assert client_config(settings) == {"bootstrap.servers": "kafka:9093", **expected}


def test_a_client_adds_its_own_settings_after_the_security_ones() -> None:
    settings = _settings(kafka_security_protocol="SSL")
    config = client_config(settings, **{"group.id": "vpp-reader", "enable.auto.commit": False})
    assert config["group.id"] == "vpp-reader" and config["security.protocol"] == "SSL"


@pytest.mark.parametrize("values, message", [
    ({"kafka_security_protocol": "TLS"}, "is not one of PLAINTEXT, SSL"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "pw"}, "needs kafka_sasl_username and kafka_sasl_password"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_sasl_username": "u",
      "kafka_sasl_password": "pw"}, "'kafka_sasl_mechanism' = 'GSSAPI'"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u",
      "kafka_sasl_password": "pw"}, "password in clear"),
    ({"kafka_ssl_ca_file": "/ca.pem"}, "does not use TLS"),
])
def test_kafka_settings_that_cannot_work_are_refused(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(**values)


def test_the_sasl_password_comes_from_a_mounted_file_and_is_never_shown(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("k4fka-s3cret\n")
    env = {"VPP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "VPP_KAFKA_SASL_USERNAME": "vpp-dispatch",
           "VPP_KAFKA_SASL_PASSWORD_FILE": str(secret)}
    settings = Settings.load(state_dir=tmp_path, environ=env)
    assert client_config(settings)["sasl.password"] == "k4fka-s3cret"
    assert "k4fka-s3cret" not in repr(settings)


def test_every_kafka_client_of_the_platform_is_built_from_the_one_function() -> None:
    """No module outside vpp.kafka_security (and the local stack, which talks to the broker it started) builds a
    client configuration of its own: a new client that did would connect without the security settings."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    allowed = {"vpp/kafka_security.py", "devtools/stack.py", "devtools/processes.py"}
    offenders = [str(p.relative_to(repo)) for package in ("cli", "flows", "sinks", "devtools", "vpp", "models")
                 for p in (repo / package).rglob("*.py")
                 if '"bootstrap.servers"' in p.read_text() and str(p.relative_to(repo)) not in allowed]
    assert not offenders, f"build Kafka client configs with vpp.kafka_security.client_config: {offenders}"
