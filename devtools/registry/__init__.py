"""A small Confluent-Schema-Registry-compatible server for Avro schemas, stored in PostgreSQL.

``python -m devtools.registry --host 127.0.0.1 --port 8081`` runs it (DSN and identities from the
settings: ``VPP_POSTGRES_DSN``, ``VPP_SCHEMA_REGISTRY_[ADMIN_]PASSWORD``; ``auth`` says who may do what);
``serve(host, port, dsn)`` / ``RegistryServer`` embed it; ``devtools.registry.compat``
holds the pure Avro compatibility rules.
"""

from devtools.registry.server import RegistryServer, serve
from devtools.registry.store import DEFAULT_COMPATIBILITY, RegistryError, RegistryStore

__all__ = ["DEFAULT_COMPATIBILITY", "RegistryError", "RegistryServer", "RegistryStore", "serve"]
