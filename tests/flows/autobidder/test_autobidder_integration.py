"""The autobidder end to end on the real stack: `vpp market` and the three flows as `vpp run` subprocesses.

The orchestrator is killed (SIGKILL) once it has bid, and restarted. Afterwards the market holds at
most one bid per interval for the node (the bid id is derived from node and interval), and every
non-zero award of its bids on ``market.awards`` became a ``dispatch.commands`` record whose
command id is derived from the bid id: none is lost, whether it came before, during or after the
outage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg

from flows.autobidder.logic import bid_id_for, command_id_for
from real_services import wait_for
from sinks.asset_registry import upsert_assets
from vpp.assets import Asset
from sinks.kafka_tools import read_topic
from vpp.serde import Serde

VPP = [sys.executable, "-m", "cli"]
NODE = "us/ca"
SPEED = 30.0  # a 5-minute interval every 10 s


def _env(settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "VPP_BROKER": settings.broker, "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
            "VPP_STATE_DIR": settings.state_dir,  # the stack's credentials (stack.json names their files)
            "VPP_POSTGRES_DSN": settings.postgres_dsn, "VPP_TIMESERIES_URL": settings.timeseries_url,
            "VPP_TOPIC_PREFIX": settings.topic_prefix, "VPP_SNAPSHOT_INTERVAL_S": "1", **extra}


def _count(dsn: str, step: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM autobidder_facts WHERE step = %s", (step,)).fetchone()[0]


def _produce_aggregate(settings, serde: Serde, now_ms: int) -> None:
    from confluent_kafka import Producer

    from sinks.kafka import producer_config

    record = {"node_path": NODE, "depth": 2, "window_start": now_ms - 10_000, "window_end": now_ms, "devices_known": 10,
              "devices_reporting": 10, "estimated_devices": 0, "battery_w": 0.0, "solar_w": 0.0, "load_w": 0.0,
              "grid_w": 0.0, "energy_available_wh": 40_000.0, "headroom_wh": 50_000.0,
              "discharge_available_w": 50_000.0, "charge_available_w": 40_000.0, "capacity_wh": 100_000.0,
              "soc_pct": 50.0, "late": 0}
    topic = settings.topic("fleet.aggregates")
    producer = Producer(producer_config(settings))
    producer.produce(topic, serde.encode(topic, record), NODE.encode())
    assert producer.flush(15) == 0


def test_killing_the_orchestrator_keeps_one_bid_per_interval_and_every_award(isolated_settings, tmp_path: Path) -> None:
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("market", "forecast", "optimize", "autobidder")}
    procs: list[subprocess.Popen] = []
    market = subprocess.Popen(VPP + ["market", "--speed", str(SPEED), "--gate-closure-s", "300", "--backfill-days", "0.1",
                                     "--journal", str(tmp_path / "journal.jsonl")],
                              env=_env(settings), stdout=subprocess.PIPE, stderr=logs["market"], text=True)
    procs.append(market)
    try:
        url = json.loads(market.stdout.readline())["url"]
        upsert_assets(settings.postgres_dsn, [Asset("pw-1", "site-1", f"{NODE}/site-1", "America/Los_Angeles", 13_500.0,
                                                    5_000.0, 5_000.0, 20.0)])  # the market takes bids for known nodes
        _produce_aggregate(settings, serde, int(time.time() * 1000))
        env = _env(settings, VPP_MARKET_URL=url, VPP_AUTOBIDDER_NODES=NODE, VPP_AUTOBIDDER_HORIZON_S="7200",
                   VPP_AUTOBIDDER_STEP_TIMEOUT_S="6", VPP_RECOVERY_DIR=str(tmp_path / "recovery"))
        for flow, log in (("forecast-worker", "forecast"), ("optimize-worker", "optimize")):
            procs.append(subprocess.Popen(VPP + ["run", flow], env=env, stdout=logs[log], stderr=subprocess.STDOUT))

        def start_autobidder() -> subprocess.Popen:
            proc = subprocess.Popen(VPP + ["run", "autobidder"], env=env, stdout=logs["autobidder"], stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        bidder = start_autobidder()
        dsn = settings.postgres_dsn
        wait_for(lambda: _count(dsn, "bid_submitted") >= 2, 120, "two bids submitted")
        time.sleep(1.5)  # mid-workflow: the next interval's requests are in flight
        bidder.send_signal(signal.SIGKILL)
        bidder.wait(10)
        before = _count(dsn, "bid_submitted")
        time.sleep(12)  # the market clears an interval or so while the orchestrator is down
        start_autobidder()
        wait_for(lambda: _count(dsn, "bid_submitted") >= before + 3, 150, "three more bids after the restart")
        def our_bids() -> list[dict]:
            journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines() if line.strip()]
            return [e["bid"] for e in journal if e["type"] == "bid" and e["bid"]["node_path"] == NODE]

        def awarded_ids() -> set[str]:
            return {a["bid_id"] for a in read_topic(settings, settings.topic("market.awards"), serde.decode)}

        placed = {b["bid_id"] for b in our_bids()}
        wait_for(lambda: placed <= awarded_ids(), 120, "the market cleared every bid placed so far")

        bids = our_bids()
        per_interval = Counter(b["interval_start"] for b in bids)
        assert bids and max(per_interval.values()) == 1, per_interval
        assert all(b["bid_id"] == bid_id_for(NODE, b["interval_start"]) for b in bids)

        ours = {b["bid_id"] for b in bids}
        awards = [a for a in read_topic(settings, settings.topic("market.awards"), serde.decode) if a["bid_id"] in ours]
        assert awards, "the market cleared some of the bids"

        def every_award_dispatched() -> bool:
            commands = read_topic(settings, settings.topic("dispatch.commands"), serde.decode)
            issued = {c["command_id"]: c for c in commands}
            return all(command_id_for(a["bid_id"]) in issued for a in awards if a["awarded_w"] != 0.0)

        wait_for(every_award_dispatched, 60, "a dispatch command for every non-zero award")
        commands = read_topic(settings, settings.topic("dispatch.commands"), serde.decode)
        by_id = {c["command_id"]: c for c in commands}
        for a in awards:
            if a["awarded_w"] != 0.0:
                c = by_id[command_id_for(a["bid_id"])]
                assert (c["target_w"], c["start"], c["end"]) == (a["awarded_w"], a["interval_start"], a["interval_end"])
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs.values():
            log.close()
