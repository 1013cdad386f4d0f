"""The schema registry as a deployed service: ``python -m devtools.registry_service --port 8081 --ready-port 8082``.

What ``python -m devtools.registry`` does, with the two things a deployment needs:

- the PostgreSQL DSN comes from the settings (``VPP_POSTGRES_DSN``, or the file ``VPP_POSTGRES_DSN_FILE``
  names: a mounted Secret), never from the command line, where ``ps`` and the pod spec would show it;
  it is printed only with its password redacted;
- a readiness endpoint, ``GET /ready`` on ``--ready-port``, that answers 200 only when the registry's
  database answers ``SELECT 1`` (503 with the reason otherwise), so Kubernetes sends no traffic to a
  registry whose store is gone.

(Kept beside ``devtools/registry`` rather than in it while that package is being reworked; both belong in
its ``__main__`` once it reads its DSN from the settings itself.)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from vpp.config import ConfigError, Settings
from vpp.errors import postgres_reason, redact_dsn

__all__ = ["database_ready", "ReadinessServer", "main"]

log = logging.getLogger("devtools.registry_service")


def database_ready(dsn: str, timeout_s: int = 2) -> tuple[bool, str]:
    """Whether PostgreSQL at ``dsn`` answers ``SELECT 1``, and why not (no password in the reason)."""
    try:
        with psycopg.connect(dsn, connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True, "database answers"
    except psycopg.Error as exc:
        return False, postgres_reason(exc)


class ReadinessServer:
    """``GET /ready`` on ``host:port``: 200 when the database answers, else 503; anything else 404."""

    def __init__(self, host: str, port: int, dsn: str):
        dsn_ = dsn

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                if self.path.rstrip("/") != "/ready":
                    self._send(404, {"error_code": 404, "message": "only GET /ready is served here"})
                    return
                ok, detail = database_ready(dsn_)
                self._send(200 if ok else 503, {"ready": ok, "detail": detail})

            def _send(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
                log.debug("%s %s", self.address_string(), format % args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="registry-ready", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> "ReadinessServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    from devtools.registry.server import RegistryServer

    parser = argparse.ArgumentParser(prog="python -m devtools.registry_service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="the registry's port (default 8081)")
    parser.add_argument("--ready-port", type=int, default=8082, help="the readiness endpoint's port (default 8082)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        dsn = Settings.load().postgres_dsn
    except ConfigError as exc:
        print(f"schema registry: {exc}", file=sys.stderr)
        return 2
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    server = RegistryServer(args.host, args.port, dsn)
    try:
        server.start()
    except psycopg.Error as exc:
        print(f"schema registry: cannot use PostgreSQL at {redact_dsn(dsn)}: {postgres_reason(exc)}",
              file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"schema registry: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    ready = ReadinessServer(args.host, args.ready_port, dsn).start()
    print(f"schema registry listening on {server.url}, readiness on port {ready.port} (GET /ready)", flush=True)
    stop_requested.wait()
    ready.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
