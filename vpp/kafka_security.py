"""Every Kafka client's connection settings, from one place: the broker address and its TLS and SASL settings.

``client_config(settings)`` is the librdkafka configuration every producer, consumer and admin client of the
platform starts from (flows, CLI, simulators, tests); ``security_config(settings)`` is its security part
alone, for clients that take the broker address separately (bytewax's Kafka input: ``add_config``).
Pure functions of the settings: the password is read from the environment or a mounted file
(``VPP_KAFKA_SASL_PASSWORD`` / ``VPP_KAFKA_SASL_PASSWORD_FILE``) by ``Settings.load``, never from a command line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SECURITY_PROTOCOLS", "SASL_MECHANISMS", "security_config", "client_config", "check_kafka_settings"]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def check_kafka_settings(protocol: str, mechanism: str, username: str, password: str, ca_file: str) -> str | None:
    """What is wrong with these Kafka security settings (a sentence naming the setting), or None."""
    if protocol not in SECURITY_PROTOCOLS:
        return f"setting 'kafka_security_protocol' = {protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}"
    if protocol.startswith("SASL_"):
        if mechanism not in SASL_MECHANISMS:
            return f"setting 'kafka_sasl_mechanism' = {mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}"
        if not username or not password:
            return (f"kafka_security_protocol {protocol} needs kafka_sasl_username and kafka_sasl_password "
                    "(VPP_KAFKA_SASL_PASSWORD_FILE: a mounted secret)")
        if mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT":
            return "SASL PLAIN over SASL_PLAINTEXT sends the password in clear: use SASL_SSL or a SCRAM mechanism"
    if ca_file and not protocol.endswith("SSL"):
        return f"setting 'kafka_ssl_ca_file' is set but kafka_security_protocol {protocol} does not use TLS"
    return None


def security_config(settings: Any) -> dict[str, str]:
    """The librdkafka TLS and SASL settings of ``settings`` (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out = {"security.protocol": protocol}
    if protocol.endswith("SSL"):
        out["ssl.endpoint.identification.algorithm"] = "https"  # the broker's certificate must name its host
        if settings.kafka_ssl_ca_file:
            out["ssl.ca.location"] = settings.kafka_ssl_ca_file
    if protocol.startswith("SASL_"):
        out["sasl.mechanism"] = settings.kafka_sasl_mechanism
        out["sasl.username"] = settings.kafka_sasl_username
        out["sasl.password"] = settings.kafka_sasl_password
    return out


def client_config(settings: Any, **extra: Any) -> dict[str, Any]:
    """The configuration every Kafka client of the platform starts from: address, security, then ``extra``
    (librdkafka names with dots, given as a dict: ``client_config(s, **{"group.id": "x"})``)."""
    return {"bootstrap.servers": settings.broker, **security_config(settings), **extra}
