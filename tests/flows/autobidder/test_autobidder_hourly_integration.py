"""The autobidder chain on an hourly market, on the real stack: `vpp market serve` and the three flows as `vpp run`.

One setting, ``market_interval_s = 3600``, makes both the market simulator and the autobidder hourly.
The market runs 720 times faster than the wall clock (an hour every 5 s), from the evening of a day
ahead (its evening peak is one the plan discharges into): its hourly prices reach the autobidder,
which bids for the hour two ahead; the bid clears and the award becomes a dispatch command over
the whole hour.
"""

from __future__ import annotations

import json
import time

from real_services import VppProcesses, vpp_env
from sinks.kafka_tools import read_topic
from vpp.serde import Serde

NODE = "us/ca"
HOUR = 3_600_000
DAY = 24 * HOUR


def _aggregate(now_ms: int) -> dict:
    return {"node_path": NODE, "depth": 2, "window_start": now_ms - 10_000, "window_end": now_ms, "devices_known": 10,
            "devices_reporting": 10, "estimated_devices": 0, "battery_w": 0.0, "solar_w": 0.0, "load_w": 0.0,
            "grid_w": 0.0, "energy_available_wh": 40_000.0, "headroom_wh": 50_000.0,
            "discharge_available_w": 50_000.0, "charge_available_w": 40_000.0, "capacity_wh": 100_000.0,
            "soc_pct": 50.0, "late": 0}


def _produce(settings, serde: Serde, topic_name: str, record: dict) -> None:
    from confluent_kafka import Producer

    from sinks.kafka import producer_config

    topic = settings.topic(topic_name)
    producer = Producer(producer_config(settings))
    producer.produce(topic, serde.encode(topic, record), NODE.encode())
    assert producer.flush(15) == 0


def test_an_hourly_market_gets_bids_awards_and_hour_long_dispatch_commands(isolated_settings, tmp_path) -> None:
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    # 17:00 at the node (UTC-8) the day after tomorrow: in the future of the wall clock the autobidder keeps
    start_ms = (int(time.time() * 1000) // DAY + 2) * DAY + 17 * HOUR + 8 * HOUR
    env = vpp_env(settings, VPP_MARKET_INTERVAL_S="3600", VPP_AUTOBIDDER_NODES=NODE,
                  VPP_RECOVERY_DIR=str(tmp_path / "recovery"))
    log = tmp_path / "processes.log"
    with VppProcesses(env, log) as procs:
        _produce(settings, serde, "fleet.aggregates", _aggregate(int(time.time() * 1000)))
        procs.start("market", "serve", "--speed", "720", "--start", str(start_ms), "--backfill-days", "1", "--any-node")
        procs.start("run", "forecast-worker")
        procs.start("run", "optimize-worker")
        procs.wait_for(lambda: '{"url"' in log.read_text(errors="replace"), 60, "the market to listen")
        status = json.loads(next(line for line in log.read_text().splitlines() if line.startswith('{"url"')))
        assert status["interval_s"] == 3600
        procs.start("run", "autobidder", VPP_MARKET_URL=status["url"])

        def commands() -> list[dict]:
            return [c for c in read_topic(settings, settings.topic("dispatch.commands"), serde.decode)
                    if c["issued_by"] == "autobidder"]

        procs.wait_for(commands, 90, "a dispatch command from an award of the hourly market")
        dispatched = commands()  # before the awards: each came from an award already on the topic
        prices = read_topic(settings, settings.topic("market.prices"), serde.decode)
        assert prices and all(p["interval_end"] - p["interval_start"] == HOUR for p in prices)
        awards = {a["bid_id"]: a for a in read_topic(settings, settings.topic("market.awards"), serde.decode)}
        requests = read_topic(settings, settings.topic("autobidder.forecast.requests"), serde.decode)
        assert requests and all((r["interval_ms"], r["horizon"]) == (HOUR, 24) for r in requests)
        for command in dispatched:
            award = awards[command["command_id"].removeprefix("cmd-")]
            assert award["awarded_w"] == command["target_w"] != 0.0
            assert (command["start"], command["end"]) == (award["interval_start"], award["interval_start"] + HOUR)
            assert command["start"] % HOUR == 0
