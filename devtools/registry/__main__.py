"""Run the schema registry in the foreground: ``python -m devtools.registry --port 8081``.

Its PostgreSQL DSN and its two identities come from the settings (``VPP_POSTGRES_DSN``,
``VPP_SCHEMA_REGISTRY_USER`` / ``VPP_SCHEMA_REGISTRY_PASSWORD`` for the read-only identity,
``VPP_SCHEMA_REGISTRY_ADMIN_USER`` / ``VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD`` for the read-write
one; each password also from a file, ``VPP_..._PASSWORD_FILE``), never from the command line,
where ``ps`` would show them. Without any password it refuses to start unless ``--no-auth``.
Stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import psycopg

from vpp.config import ConfigError, Settings
from vpp.errors import first_line, redact_dsn
from devtools.registry.auth import WRITE, identities_from_settings
from devtools.registry.server import RegistryServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.registry", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081; 0 = any free port)")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL DSN without a password (default: the setting VPP_POSTGRES_DSN, the place "
                             "for one with a password)")
    parser.add_argument("--no-auth", action="store_true", help="serve without authentication (a laptop only)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.load()
    except ConfigError as exc:
        print(f"schema registry: {exc}", file=sys.stderr)
        return 2
    dsn = args.dsn or settings.postgres_dsn
    identities = identities_from_settings(settings)
    if not identities and not args.no_auth:
        print("schema registry: no identity configured: set VPP_SCHEMA_REGISTRY_PASSWORD and "
              "VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD (or their _FILE variants), or pass --no-auth", file=sys.stderr)
        return 2
    if identities and not any(i.role == WRITE for i in identities.values()):
        print("schema registry: warning: no read-write identity (VPP_SCHEMA_REGISTRY_ADMIN_PASSWORD): "
              "nobody can register schemas", file=sys.stderr)
    from vpp.observability import setup_observability

    setup_observability("vpp-schema-registry")

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    server = RegistryServer(args.host, args.port, dsn, identities=None if args.no_auth else identities)
    try:
        server.start()
    except psycopg.Error as exc:
        reason = first_line(str(exc)).replace(dsn, redact_dsn(dsn))
        print(f"schema registry: cannot use PostgreSQL at {redact_dsn(dsn)}: {reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"schema registry: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    if args.no_auth:
        print("schema registry: warning: serving WITHOUT authentication (--no-auth)", file=sys.stderr, flush=True)
    print(f"schema registry listening on {server.url}", flush=True)
    stop_requested.wait()
    logging.getLogger("devtools.registry").info("stopping schema registry")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
