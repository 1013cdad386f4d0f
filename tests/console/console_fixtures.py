"""Helpers of the console tests (imported by name, as tests/flows' real_services): seeding the stack's stores
the way the flows write them, waiting for conditions, running a flow."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
from real_services import wait_for  # noqa: F401  (re-exported to the console tests)

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "admin")


def start_flow(settings, name: str, log_path) -> subprocess.Popen:
    """``vpp run NAME`` on the test's own topics and database (stop it with ``stop``)."""
    from real_services import vpp_env

    env = vpp_env(settings)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "cli", "run", name], env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Console:
    url: str
    settings: object
    app: object
    root: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)


def aggregate(node_path: str, window_start_ms: int, battery_w: float, *, devices: int = 2) -> dict:
    """A ``fleet.aggregates`` record as the aggregate flow writes it."""
    return {"node_path": node_path, "depth": node_path.count("/") + 1, "window_start": window_start_ms,
            "window_end": window_start_ms + 10_000, "devices_known": devices, "devices_reporting": devices,
            "estimated_devices": 0, "battery_w": battery_w, "solar_w": 100.0, "load_w": 900.0,
            "grid_w": 800.0 - battery_w, "energy_available_wh": 5000.0 * devices, "headroom_wh": 1000.0,
            "discharge_available_w": 5000.0 * devices, "charge_available_w": 5000.0 * devices,
            "capacity_wh": 13500.0 * devices, "soc_pct": 55.5, "late": 0}


def store_aggregates(settings, records: list[dict]) -> None:
    """Write aggregates where store-aggregates writes them: ``node_state`` and the time-series store."""
    import psycopg

    from sinks.node_state import NODE_STATE_UPSERT, node_state_rows
    from sinks.timeseries import aggregate_lines

    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.cursor().executemany(NODE_STATE_UPSERT, node_state_rows(records))
    httpx.post(f"{settings.timeseries_url}/api/v2/write", params={"bucket": "vpp", "org": "vpp", "precision": "ms"},
               content="\n".join(aggregate_lines(records)), timeout=10).raise_for_status()


def seed_fleet(settings, root: str) -> None:
    """Two sites with two devices each under ``ROOT/ca``, and a few windows of their aggregates."""
    from sinks.asset_registry import upsert_assets
    from vpp.assets import Asset

    upsert_assets(settings.postgres_dsn, [
        Asset(f"{root}-dev-{i}", f"site-{i // 2}", f"{root}/ca/site{i // 2}", "UTC", 13500.0, 5000.0, 5000.0, 10.0)
        for i in range(4)])
    now_ms = int(time.time() * 1000) // 10_000 * 10_000
    records = []
    for k in range(6, 0, -1):
        start = now_ms - k * 10_000
        records += [aggregate(root, start, 4000.0 + k, devices=4), aggregate(f"{root}/ca", start, 4000.0 + k, devices=4),
                    aggregate(f"{root}/ca/site0", start, 2000.0 + k), aggregate(f"{root}/ca/site1", start, 2000.0)]
    for r in records:
        store_aggregates(settings, [r])


def insert_alert(settings, alert_id: str, node_path: str, state: str = "firing") -> None:
    """An alert row as the alerts flow stores it (``alerts`` of migration 070_alerts)."""
    import psycopg

    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.execute("INSERT INTO alerts (alert_id, rule, subject, node_path, state, state_rank, severity, value, threshold, "
                     "started_at, fired_at, changed_at, summary) VALUES (%s, 'node_silent', %s, %s, %s, 2, 'critical', 0, 1, "
                     "now(), now(), now(), 'no device of the node reported')", (alert_id, node_path, node_path, state))


def produce_readings(settings, root: str, ts_ms: int, *, devices: int = 4) -> None:
    """Canonical readings of the seeded devices on the test's ``telemetry.canonical`` (what canonicalize emits)."""
    from confluent_kafka import Producer

    from sinks.kafka import producer_config
    from vpp.serde import Serde

    topic = settings.topic("telemetry.canonical")
    serde = Serde.from_settings(settings)
    producer = Producer(producer_config(settings))
    for i in range(devices):
        record = {"device_id": f"{root}-dev-{i}", "site_id": f"site-{i // 2}", "region_path": f"{root}/ca/site{i // 2}",
                  "ts": ts_ms, "dialect": "test", "soc_pct": 60.0, "battery_w": 0.0, "solar_w": 0.0, "load_w": 500.0,
                  "grid_w": 500.0, "grid_connected": True, "capacity_wh": 13500.0, "flags": []}
        producer.produce(topic, serde.encode(topic, record), record["device_id"], timestamp=ts_ms)
    assert producer.flush(15) == 0, "readings not delivered"


def seed_market(settings, node_path: str, intervals: int = 6) -> int:
    """Autobidder workflows with their facts, written as the autobidder's store writes them; returns the
    first interval's start (ms). Each interval: forecast, plan, bid and award; the next one fetched its price."""
    import psycopg
    from psycopg.types.json import Jsonb

    from sinks.autobidder_store import FACT_UPSERT, WORKFLOW_UPSERT, store_rows

    first = (int(time.time() * 1000) // 300_000 - intervals) * 300_000
    items = []
    for k in range(intervals):
        start, at = first + k * 300_000, first + k * 300_000 + 1000
        price = 40.0 + k
        facts = {"fetched": {"newest_price_interval_start": start - 300_000, "newest_price_usd_per_mwh": price - 1.5},
                 "forecast": {"method": "persistence", "prices_usd_per_mwh": [price, price + 1]},
                 "optimized": {"status": "Optimal", "first_discharge_w": 1000.0 * k, "first_charge_w": 0.0},
                 "bid_submitted": {"bid_id": f"b{k}", "pairs": [{"price_usd_per_mwh": price, "quantity_w": 1000.0 * k}]},
                 "awarded": {"awarded_w": 900.0 * k, "clearing_price_usd_per_mwh": price + 0.5}}
        items += [("fact", {"node_path": node_path, "interval_start": start, "step": step, "fact": fact, "at": at})
                  for step, fact in facts.items()]
        items.append(("workflow", {"node_path": node_path, "interval_start": start, "status": "dispatched",
                                   "bid_id": f"b{k}", "reason": None, "at": at}))
    facts, workflows = store_rows(items)
    with psycopg.connect(settings.postgres_dsn) as conn, conn.cursor() as cur:
        cur.executemany(FACT_UPSERT, [(*row[:3], Jsonb(row[3]), row[4]) for row in facts])
        cur.executemany(WORKFLOW_UPSERT, workflows)
    return first
