"""`vpp gateway [--port P] [--host H]`: run the device gateway in the foreground; `vpp gateway sessions`: its sessions.

The gateway writes its URL to ``<state_dir>/gateway.json`` (``vpp status --json`` shows it under
``gateway``) and removes it when it stops. ``vpp up`` does not start it.
"""

from __future__ import annotations

import argparse
import json

from cli.common import add_common, load_settings, positive_int

__all__ = ["add_commands"]


def cmd_gateway(args: argparse.Namespace) -> int:
    if args.action == "sessions":
        return _sessions(args)
    import asyncio
    import logging
    import signal

    from edge.gateway import Gateway
    from vpp.observability import setup_observability

    settings = load_settings(args)
    changes = {k: v for k, v in (("gateway_port", args.port), ("gateway_host", args.host)) if v is not None}
    settings = settings.replace(**changes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection is noise at fleet scale
    setup_observability("vpp-gateway")

    async def run() -> None:
        gateway = Gateway(settings)
        url = await gateway.start()
        print(f"gateway listening on {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gateway.stop()

    asyncio.run(run())
    return 0


def _sessions(args: argparse.Namespace) -> int:
    import psycopg
    from psycopg.rows import dict_row

    settings = load_settings(args)
    query = ("SELECT id, device_id, cert_serial, gateway, remote, connected_at, disconnected_at, close_code, close_reason "
             "FROM gateway_sessions WHERE (%(d)s::text IS NULL OR device_id = %(d)s) ORDER BY connected_at DESC LIMIT %(n)s")
    with psycopg.connect(settings.postgres_dsn, row_factory=dict_row) as conn:
        rows = conn.execute(query, {"d": args.device, "n": args.limit}).fetchall()
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    for r in rows:
        end = f"closed {r['disconnected_at']:%H:%M:%S} code {r['close_code']} {r['close_reason'] or ''}" if r["disconnected_at"] else "open"
        print(f"{r['connected_at']:%Y-%m-%d %H:%M:%S}  {r['device_id']:<16} {r['cert_serial'][:12]}  {r['gateway']:<18} {end}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("gateway", help="the device gateway (WebSocket + mutual TLS at /v1/device); `sessions` lists sessions")
    add_common(p)
    p.add_argument("action", nargs="?", choices=("serve", "sessions"), default="serve")
    p.add_argument("--port", type=int, default=None, help="listening port (default: setting gateway_port, 0 = any free)")
    p.add_argument("--host", default=None, help="listening address (default: setting gateway_host)")
    p.add_argument("--device", default=None, help="sessions: only this device")
    p.add_argument("--limit", type=positive_int, default=50, help="sessions: at most this many, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gateway)
