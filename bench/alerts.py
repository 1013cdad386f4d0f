"""Alerts benchmark: the rules over a fleet's readings, and the flow end to end, each against a baseline.

A fleet of N devices (default 10,000) under 50 sites of 5 regions reports every 5 s for D seconds
(default 300) of event time; 2 % of the devices fall silent half-way (device_offline fires for them)
and one site is islanded from the start (grid_outage fires, its devices' alerts are inhibited).

- rules: ``AlertState.step`` over the readings in time order with a clock after each 5 s of readings
  (what the flow's reader sends), time per reading, beside the least any rule engine must do: a
  Python pass storing each reading's time and values per device (the baseline);
- end to end: the bytewax flow ``flows.alerts.flow.build_flow`` on one worker with in-memory ports,
  Avro in, alert records out, beside the baseline of only decoding the same Avro messages.

Usage: python bench/alerts.py [--devices 10000] [--duration-s 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bytewax.operators as op  # noqa: E402
from bytewax.connectors.kafka import KafkaSourceMessage  # noqa: E402
from bytewax.testing import TestingSink, TestingSource, run_main  # noqa: E402

from flows.alerts.flow import build_flow  # noqa: E402
from flows.alerts.logic import RuleConfig  # noqa: E402
from flows.alerts.state import AlertState  # noqa: E402
from vpp.config import Settings  # noqa: E402
from vpp.serde import Serde  # noqa: E402

T0 = 1_800_000_000_000


def readings(devices: int, duration_s: int) -> list[dict]:
    out = []
    silent_from = duration_s // 2
    for t in range(0, duration_s, 5):
        for i in range(devices):
            if i % 50 == 7 and t >= silent_from:
                continue
            site = f"r{i % 5}/s{i % 50}"
            out.append({"device_id": f"d{i}", "site_id": f"s{i % 50}", "region_path": f"root/{site}", "ts": T0 + t * 1000,
                        "dialect": "sonnen/2", "soc_pct": 40.0 + i % 50, "battery_w": 0.0, "solar_w": 0.0,
                        "load_w": 0.0, "grid_w": 0.0, "grid_connected": i % 50 != 3, "capacity_wh": 10_000.0,
                        "flags": []})
    return out


def bench_rules(records: list[dict], rounds: int) -> tuple[float, float, int]:
    events, last = [], None
    for r in records:
        if r["ts"] != last and last is not None:
            events.append(("c", last, "bench"))
        last = r["ts"]
        events.append(("r", r["ts"], r["device_id"], r["region_path"], r["soc_pct"], r["grid_connected"]))
    events.append(("c", last, "bench"))
    best_rules = best_base = float("inf")
    alerts = 0
    for _ in range(rounds):
        t = time.perf_counter()
        out = AlertState(RuleConfig()).step(events)
        best_rules = min(best_rules, time.perf_counter() - t)
        alerts = len(out.alerts)
        t = time.perf_counter()
        seen: dict[str, tuple] = {}
        for ev in events:
            if ev[0] == "r":
                seen[ev[2]] = (ev[1], ev[4], ev[5])
        best_base = min(best_base, time.perf_counter() - t)
    return best_rules, best_base, alerts


class _Ports:
    def __init__(self, msgs: list, written: list):
        self.serde, self._msgs, self._written = Serde.local(), msgs, written

    def topic(self, name: str) -> str:
        return name

    def read(self, flow, step_id, topics):
        return op.input(step_id, flow, TestingSource(self._msgs, batch_size=1000))

    def write(self, step_id, stream) -> None:
        op.output(step_id, stream, TestingSink(self._written))


def bench_flow(records: list[dict], rounds: int) -> tuple[float, float, int]:
    serde = Serde.local()
    values = serde.encode_many("telemetry.canonical", records)
    msgs = [KafkaSourceMessage(r["device_id"].encode(), v, "telemetry.canonical", partition=0, offset=i)
            for i, (r, v) in enumerate(zip(records, values))]
    best_flow = best_base = float("inf")
    written: list = []
    for _ in range(rounds):
        written = []
        t = time.perf_counter()
        run_main(build_flow(Settings(), ports=_Ports(msgs, written)))
        best_flow = min(best_flow, time.perf_counter() - t)
        t = time.perf_counter()
        decode = serde.decode
        for m in msgs:
            decode(m.value)
        best_base = min(best_base, time.perf_counter() - t)
    return best_flow, best_base, sum(1 for m in written if m.topic == "fleet.alerts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--duration-s", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = readings(args.devices, args.duration_s)
    n = len(records)
    print(f"{args.devices} devices, {args.duration_s} s of event time: {n} readings (best of {args.rounds})")
    rules, base, alerts = bench_rules(records, args.rounds)
    print(f"rules        {rules:7.3f} s  {n / rules:10.0f} readings/s  {rules / n * 1e6:6.2f} us/reading  "
          f"{alerts} alert records; baseline {base:.3f} s, ratio rules / baseline {rules / base:.1f}")
    flow, base, alerts = bench_flow(records, args.rounds)
    print(f"end to end   {flow:7.3f} s  {n / flow:10.0f} readings/s  {flow / n * 1e6:6.2f} us/reading  "
          f"{alerts} alert records; decode only {base:.3f} s, ratio flow / decode {flow / base:.1f}")


if __name__ == "__main__":
    main()
