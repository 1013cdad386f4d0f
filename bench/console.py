"""Console benchmark: the tree API's latency and throughput over a large fleet, and live-event delivery.

On the local stack (``vpp up``; ``--state-dir``), in a fresh database: ``node_state`` holds a fleet of N
devices (default 100,000) under 1 root, 10 regions, 100 utilities and N/100 sites, every node and device a
row, as store-aggregates writes it. The API runs in this process on one uvicorn worker (a thread).

- tree: ``GET /api/tree?depth=1`` (the console's first view) and ``?path=<utility>&depth=1``, p50/p95 over
  ``--requests`` sequential requests, and requests/s; the baseline is the same query without HTTP
  (``read_node_state``), so the ratio is what the API adds;
- every node: ``GET /api/tree?depth=32&all=true`` (all rows as one JSON) vs the same read;
- live events: ``--sse-clients`` clients on ``/api/stream``; one node's row changes; time until each client
  has the event (bounded by the poll period, 1 s).

Usage: python bench/console.py [--devices 100000] [--requests 200] [--sse-clients 100] [--state-dir .vpp]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from sinks.node_state import NODE_STATE_UPSERT, read_node_state  # noqa: E402
from vpp.config import Settings  # noqa: E402


def _row(path: str, ms: int, devices: int, battery_w: float = 1000.0) -> dict:
    return {"node_path": path, "depth": path.count("/") + 1, "window_start": ms, "window_end": ms + 10_000,
            "devices_known": devices, "devices_reporting": devices, "estimated_devices": 0, "battery_w": battery_w,
            "solar_w": 0.0, "load_w": 500.0 * devices, "grid_w": 0.0, "energy_available_wh": 5000.0 * devices,
            "headroom_wh": 1000.0 * devices, "discharge_available_w": 5000.0 * devices,
            "charge_available_w": 5000.0 * devices, "capacity_wh": 13500.0 * devices, "soc_pct": 50.0, "late": 0}


def fleet_rows(devices: int, ms: int) -> list[dict]:
    sites = max(1, devices // 100)
    rows = [_row("us", ms, devices)]
    rows += [_row(f"us/r{r}", ms, devices // 10) for r in range(10)]
    rows += [_row(f"us/r{u // 10}/u{u}", ms, devices // 100) for u in range(100)]
    rows += [_row(f"us/r{s % 100 // 10}/u{s % 100}/s{s}", ms, devices // sites) for s in range(sites)]
    rows += [_row(f"us/r{d % sites % 100 // 10}/u{d % sites % 100}/s{d % sites}/d{d}", ms, 1) for d in range(devices)]
    return rows


def _seed(dsn: str, rows: list[dict]) -> None:
    from sinks.node_state import node_state_rows

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(NODE_STATE_UPSERT, node_state_rows(rows))


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--sse-clients", type=int, default=100)
    ap.add_argument("--state-dir", default=None)
    args = ap.parse_args()

    import uvicorn

    from console.app import create_app
    from console.auth import new_token
    from sinks.auth_store import AuthStore
    from vpp.db import migrate
    from vpp.net import free_ports

    base = Settings.load(state_dir=args.state_dir)
    dbname = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(base.postgres_dsn, dbname=dbname)
    server = None
    try:
        migrate(dsn)
        settings = base.replace(postgres_dsn=dsn)
        t = time.perf_counter()
        rows = fleet_rows(args.devices, int(time.time() * 1000) // 10_000 * 10_000)
        _seed(dsn, rows)
        print(f"fleet: {args.devices:,} devices, {len(rows):,} node_state rows, seeded in {time.perf_counter() - t:.1f} s")
        store = AuthStore(dsn)
        store.add_user("bench", "viewer", "bench password")
        token, digest = new_token()
        store.create_token("bench", digest, expires_in=timedelta(hours=1))
        port = free_ports(1)[0]
        server = uvicorn.Server(uvicorn.Config(create_app(settings, session_key=secrets.token_bytes(32)),
                                               host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        client = httpx.Client(base_url=url, headers=headers, timeout=120)

        for label, params, direct in (
                ("tree depth=1", {"depth": 1}, lambda: read_node_state(dsn, None, levels=1)),
                ("utility depth=1", {"path": "us/r3/u37", "depth": 1}, lambda: read_node_state(dsn, "us/r3/u37", levels=1))):
            api = _timed(lambda: client.get("/api/tree", params=params).raise_for_status(), args.requests)
            baseline = _timed(direct, args.requests)
            print(f"{label:<18} api p50 {_pct(api, 50):7.2f} ms p95 {_pct(api, 95):7.2f} ms ({1000 / statistics.mean(api):6.0f} req/s); "
                  f"baseline p95 {_pct(baseline, 95):6.2f} ms; ratio api / baseline (p95) {_pct(api, 95) / _pct(baseline, 95):.1f}")
        reps = 3
        api = _timed(lambda: client.get("/api/tree", params={"depth": 32, "all": "true"}).raise_for_status(), reps)
        baseline = _timed(lambda: read_node_state(dsn, None, levels=32), reps)
        print(f"{'every node':<18} api best {min(api):7.0f} ms, baseline best {min(baseline):6.0f} ms "
              f"({len(rows):,} rows); ratio api / baseline {min(api) / min(baseline):.1f}")

        # live events: K clients, one change, time to each client
        received: list[float] = []
        ready = threading.Barrier(args.sse_clients + 1)
        changed_at = [0.0]
        lock = threading.Lock()

        def listen() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c, \
                    c.stream("GET", "/api/stream", params={"events": "aggregate", "path": "us/r1/u12"}) as r:
                lines = r.iter_lines()
                next(lines)
                ready.wait()
                for line in lines:
                    if line.startswith("data:"):
                        with lock:
                            received.append((time.perf_counter() - changed_at[0]) * 1000)
                        return

        threads = [threading.Thread(target=listen, daemon=True) for _ in range(args.sse_clients)]
        for th in threads:
            th.start()
        ready.wait()
        time.sleep(1.5)  # the poller's first look sets its starting point
        changed_at[0] = time.perf_counter()
        _seed(dsn, [_row("us/r1/u12", int(time.time() * 1000) // 10_000 * 10_000 + 10_000, args.devices // 100, 42.0)])
        for th in threads:
            th.join(timeout=30)
        if received:
            print(f"live events: {len(received)}/{args.sse_clients} clients got the change; p50 {_pct(received, 50):.0f} ms, "
                  f"max {max(received):.0f} ms (poll period 1000 ms)")
        else:
            print(f"live events: none of {args.sse_clients} clients got the change")
    finally:
        if server is not None:
            server.should_exit = True
            time.sleep(1.5)
        with psycopg.connect(base.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


if __name__ == "__main__":
    main()
