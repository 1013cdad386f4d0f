"""`vpp schemas register|list`: our Avro contracts in the schema registry.

``register`` uses the registry's read-write identity (``schema_registry_admin_user`` /
``schema_registry_admin_password``); ``list`` the read-only one. Flows only look schemas up.
"""

from __future__ import annotations

import argparse

from cli.common import command, load_settings
from vpp.errors import UserError

__all__ = ["add_commands", "register_all"]


def register_all(settings, topic_prefix: str | None = None) -> dict[str, int]:
    """Register every topic's schema under ``<topic>-value`` as the read-write identity; returns subject -> schema id.

    An incompatible change is refused by the registry (HTTP 409) and raised
    as a UserError naming the subject, so nothing downstream runs on it; so is
    a refused identity (401/403).
    """
    from vpp.serde import RegistrationError, register_schemas, registry_client

    client = registry_client(settings.schema_registry_url, settings.schema_registry_admin_user,
                             settings.schema_registry_admin_password)
    try:
        return register_schemas(client, settings.topic_prefix if topic_prefix is None else topic_prefix)
    except RegistrationError as exc:
        if exc.http_status == 409:
            raise UserError(f"schema {exc.name}.avsc is incompatible with the registered {exc.subject}: "
                            f"{exc.message}") from exc
        if exc.http_status in (401, 403):
            raise UserError(f"the registry refused user {settings.schema_registry_admin_user!r} "
                            f"(HTTP {exc.http_status}: {exc.message}): registering needs the read-write identity "
                            "(VPP_SCHEMA_REGISTRY_ADMIN_USER / VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD)") from exc
        raise UserError(str(exc)) from exc


def cmd_register(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    for subject, schema_id in register_all(settings).items():
        print(f"{subject:<32} id {schema_id}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from vpp.serde import registry_client

    settings = load_settings(args)
    client = registry_client(settings.schema_registry_url, settings.schema_registry_user,
                             settings.schema_registry_password)
    for subject in sorted(client.get_subjects()):
        latest = client.get_latest_version(subject)
        print(f"{subject:<32} version {latest.version}  id {latest.schema_id}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("schemas", help="register or list the Avro schemas of every topic")
    ssub = p.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    command(ssub, "register", cmd_register, help="register schemas/*.avsc under <topic>-value; fails on an incompatible change")
    command(ssub, "list", cmd_list, help="subjects with their latest version and id")
