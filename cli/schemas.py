"""`vpp schemas register|list`: our Avro contracts in the schema registry."""

from __future__ import annotations

import argparse

from cli.common import add_common, load_settings
from vpp.errors import UserError

__all__ = ["add_commands", "register_all"]


def register_all(registry_url: str, topic_prefix: str = "") -> dict[str, int]:
    """Register every topic's schema under ``<topic>-value``; returns subject -> schema id.

    An incompatible change is refused by the registry (HTTP 409) and raised
    as a UserError naming the subject, so nothing downstream runs on it.
    """
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from vpp.serde import TOPIC_SCHEMAS, schema_text, subject_for

    client = SchemaRegistryClient({"url": registry_url})
    ids: dict[str, int] = {}
    for topic, name in TOPIC_SCHEMAS.items():
        subject = subject_for(topic_prefix + topic)
        try:
            registered = client.register_schema(subject, Schema(schema_text(name), "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise UserError(f"schema {name}.avsc is incompatible with the registered {subject}: {exc.error_message}") from exc
            raise UserError(f"registering {subject} failed: HTTP {exc.http_status_code} {exc.error_message}") from exc
        ids[subject] = registered if isinstance(registered, int) else registered.schema_id
    return ids


def cmd_register(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    for subject, schema_id in register_all(settings.schema_registry_url, settings.topic_prefix).items():
        print(f"{subject:<32} id {schema_id}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    settings = load_settings(args)
    client = SchemaRegistryClient({"url": settings.schema_registry_url})
    for subject in sorted(client.get_subjects()):
        latest = client.get_latest_version(subject)
        print(f"{subject:<32} version {latest.version}  id {latest.schema_id}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("schemas", help="register or list the Avro schemas of every topic")
    ssub = p.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    r = ssub.add_parser("register", help="register schemas/*.avsc under <topic>-value; fails on an incompatible change")
    add_common(r)
    r.set_defaults(func=cmd_register)
    ls = ssub.add_parser("list", help="subjects with their latest version and id")
    add_common(ls)
    ls.set_defaults(func=cmd_list)
