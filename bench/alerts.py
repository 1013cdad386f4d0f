"""Alerts benchmark: the rules over a fleet's readings, and the flow end to end, each against a baseline.

A fleet of N devices (default 100,000) under 50 sites of 5 regions reports every ``--interval-s`` (default
10 s) for D seconds (default 300) of event time; 2 % of the devices fall silent half-way (device_offline
fires for them) and one site is islanded from the start (grid_outage fires, its devices' alerts are inhibited).

- rules: ``AlertState.step`` over the readings in time order with a clock after each instant's readings
  (what the flow's reader sends), time per reading, beside the least any rule engine must do: a
  Python pass storing each reading's time and values per device (the baseline);
- end to end: the bytewax flow ``flows.alerts.flow.build_flow`` on one worker with in-memory ports,
  Avro in, alert records out: readings/s beside the readings/s of only decoding the same Avro messages
  (the baseline, same run); the ratio flow / baseline is the issue's figure (target >= 0.4);
- latency: from the instant a condition crosses its threshold in event time (``started_at`` + the rule's
  ``for``) to the event time of its ``firing`` record;
- memory per device: the Python heap of an ``AlertState`` holding every device (tracemalloc), and the
  size of its recovery snapshot (pickle), divided by the devices.

Usage: python bench/alerts.py [--devices 100000] [--interval-s 10] [--duration-s 300] [--rounds 1]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bytewax.connectors.kafka import KafkaSourceMessage  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from flows.alerts.flow import build_flow  # noqa: E402
from flows.alerts.logic import RuleConfig  # noqa: E402
from flows.alerts.state import AlertState  # noqa: E402
from sinks.ports import MemoryPorts  # noqa: E402
from vpp.config import Settings  # noqa: E402
from vpp.serde import Serde  # noqa: E402

T0 = 1_800_000_000_000


def readings(devices: int, duration_s: int, interval_s: int = 10) -> list[dict]:
    out = []
    silent_from = duration_s // 2
    for t in range(0, duration_s, interval_s):
        for i in range(devices):
            if i % 50 == 7 and t >= silent_from:
                continue
            site = f"r{i % 5}/s{i % 50}"
            out.append({"device_id": f"d{i}", "site_id": f"s{i % 50}", "region_path": f"root/{site}", "ts": T0 + t * 1000,
                        "dialect": "sonnen/2", "soc_pct": 40.0 + i % 50, "battery_w": 0.0, "solar_w": 0.0,
                        "load_w": 0.0, "grid_w": 0.0, "grid_connected": i % 50 != 3, "capacity_wh": 10_000.0,
                        "flags": []})
    return out


def _events(records: list[dict]) -> list[tuple]:
    events, last = [], None
    for r in records:
        if r["ts"] != last and last is not None:
            events.append(("c", last, "bench"))
        last = r["ts"]
        events.append(("r", r["ts"], r["device_id"], r["region_path"], r["soc_pct"], r["grid_connected"]))
    events.append(("c", last, "bench"))
    return events


def bench_rules(records: list[dict], rounds: int) -> tuple[float, float, list[dict]]:
    events = _events(records)
    best_rules = best_base = float("inf")
    alerts: list[dict] = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = AlertState(RuleConfig()).step(events)
        best_rules = min(best_rules, time.perf_counter() - t)
        alerts = out.alerts
        t = time.perf_counter()
        seen: dict[str, tuple] = {}
        for ev in events:
            if ev[0] == "r":
                seen[ev[2]] = (ev[1], ev[4], ev[5])
        best_base = min(best_base, time.perf_counter() - t)
    return best_rules, best_base, alerts


def firing_lag_s(alerts: list[dict], cfg: RuleConfig) -> dict[str, float]:
    """Per rule, the largest event-time lag from its threshold (start + ``for``) to the ``firing`` record."""
    specs = cfg.specs()
    lags: dict[str, float] = {}
    for a in alerts:
        if a["state"] == "firing":
            lag = (a["at"] - a["started_at"] - specs[a["rule"]].for_ms) / 1000
            lags[a["rule"]] = max(lags.get(a["rule"], 0.0), lag)
    return lags


def memory_per_device(records: list[dict], devices: int) -> tuple[float, float]:
    """(heap bytes, snapshot bytes) per device of a state that has seen one reading of every device."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    # strings of its own, as decoded from the broker: the state keeps the device id and region path it saw
    events = _events([{**r, "device_id": r["device_id"].encode().decode(), "region_path": r["region_path"].encode().decode()}
                      for r in records[:devices]])
    state = AlertState(RuleConfig())
    state.step(events)
    del events
    heap = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    return heap / devices, len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)) / devices


def bench_flow(records: list[dict], rounds: int) -> tuple[float, float, int]:
    serde = Serde.local()
    values = serde.encode_many("telemetry.canonical", records)
    msgs = [KafkaSourceMessage(r["device_id"].encode(), v, "telemetry.canonical", partition=0, offset=i)
            for i, (r, v) in enumerate(zip(records, values))]
    best_flow = best_base = float("inf")
    ports = MemoryPorts(msgs, batch_size=1000, serde=serde)
    for _ in range(rounds):
        ports.written.clear()
        t = time.perf_counter()
        run_main(build_flow(Settings(), ports=ports))
        best_flow = min(best_flow, time.perf_counter() - t)
        t = time.perf_counter()
        decode = serde.decode
        for m in msgs:
            decode(m.value)
        best_base = min(best_base, time.perf_counter() - t)
    return best_flow, best_base, sum(1 for m in ports.written if m.topic == "fleet.alerts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--interval-s", type=int, default=10)
    parser.add_argument("--duration-s", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    records = readings(args.devices, args.duration_s, args.interval_s)
    n = len(records)
    print(f"{args.devices} devices, one reading each {args.interval_s} s, {args.duration_s} s of event time: "
          f"{n} readings (best of {args.rounds})")
    heap, snapshot = memory_per_device(records, args.devices)
    print(f"memory       {heap:7.0f} B/device in the heap, {snapshot:5.0f} B/device in a recovery snapshot")
    rules, base, alerts = bench_rules(records, args.rounds)
    print(f"rules        {rules:7.3f} s  {n / rules:10.0f} readings/s  {rules / n * 1e6:6.2f} us/reading  "
          f"{len(alerts)} alert records; baseline {base:.3f} s, ratio rules / baseline {rules / base:.1f}")
    lags = ", ".join(f"{rule} {lag:.0f} s" for rule, lag in sorted(firing_lag_s(alerts, RuleConfig()).items()))
    print(f"latency      threshold -> firing record, event time, largest: {lags or 'nothing fired'}")
    flow, base, alerts_out = bench_flow(records, args.rounds)
    print(f"end to end   {flow:7.3f} s  {n / flow:10.0f} readings/s  {flow / n * 1e6:6.2f} us/reading  "
          f"{alerts_out} alert records; decode only {n / base:.0f} readings/s, ratio flow / decode {base / flow:.2f}")


if __name__ == "__main__":
    main()
