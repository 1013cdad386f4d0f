"""The local stack's credentials: generated once into the state directory, and the schemas registered with them.

``ensure_secrets`` writes the schema registry's read-only and read-write passwords and the market
API's bearer token to ``<state_dir>/secrets/<setting name>`` (directory 0700, files 0600, created
exclusively so an existing one is never replaced); ``stack.json`` names the files and
``vpp.config.Settings`` reads them. ``register_schemas_as_admin`` registers every topic's schema as
the read-write identity, as a deployment does once (flows only look schemas up).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from vpp.errors import UserError

__all__ = ["STACK_SECRETS", "ensure_secrets", "register_schemas_as_admin"]

#: the credentials the stack generates (names of settings; see ``vpp.config.SECRETS``)
STACK_SECRETS = ("schema_registry_password", "schema_registry_admin_password", "market_token")


def ensure_secrets(state_dir: Path) -> dict[str, str]:
    """The generated credentials' files, created when missing: setting name -> path."""
    directory = state_dir / "secrets"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    files = {}
    for name in STACK_SECRETS:
        path = directory / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        files[name] = str(path)
    return files


def register_schemas_as_admin(state_dir: Path, topic_prefix: str = "") -> dict[str, int]:
    """Every topic's schema registered in the stack's registry as its read-write identity (harmless when there)."""
    from vpp.config import Settings
    from vpp.serde import RegistrationError, register_schemas, registry_client

    settings = Settings.load(state_dir=state_dir, environ={})
    client = registry_client(settings.schema_registry_url, settings.schema_registry_admin_user,
                             settings.schema_registry_admin_password)
    try:
        return register_schemas(client, topic_prefix)
    except RegistrationError as exc:
        raise UserError(f"the local registry refused our schemas: {exc}") from exc
