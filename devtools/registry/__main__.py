"""Run the schema registry in the foreground: ``python -m devtools.registry --port 8081 --dsn postgresql://...``.

Stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import psycopg

from devtools.registry.server import RegistryServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.registry", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081; 0 = any free port)")
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN, e.g. postgresql://postgres@127.0.0.1:5432/vpp")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from vpp.observability import setup_observability

    setup_observability("vpp-schema-registry")

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    server = RegistryServer(args.host, args.port, args.dsn)
    try:
        server.start()
    except psycopg.Error as exc:
        print(f"schema registry: cannot use PostgreSQL at {args.dsn}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"schema registry: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"schema registry listening on {server.url}", flush=True)
    stop_requested.wait()
    logging.getLogger("devtools.registry").info("stopping schema registry")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
