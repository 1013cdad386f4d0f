"""Dispatch benchmark: allocation, re-allocation and command-to-last-set-point, each against a baseline.

One node of N devices (default 100,000) with mixed hardware and SoC, all in one process:

- allocate: ``allocate_setpoints`` (limits, energy until end, water-filling) vs the naive baseline
  ``proportional_split`` (target split by rated limit, no rule checked);
- re-allocate: ``DispatchState`` with an active command over the node, 10 % of the devices go
  silent, time of the window check that re-allocates and emits the changed set points and the
  releases (vs the baseline: a fresh naive split and one set-point record per remaining device);
- end to end: the bytewax flow ``flows.dispatch.flow.build_flow`` on one worker with in-memory ports
  (a TestingSource-like partition, no broker): the readings of every device, then one command;
  time from the command leaving the source to the last Avro ``device.commands`` message reaching
  the sink. The baseline is the least any dispatcher must do for the same output: a naive split,
  one record per device, Avro-encoded with the same serde.

Usage: python bench/dispatch.py [--devices 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bytewax.connectors.kafka import KafkaSourceMessage  # noqa: E402
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition  # noqa: E402
from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from flows._common.registries import StaticAssets  # noqa: E402
from flows.dispatch.flow import build_flow  # noqa: E402
from sinks.ports import MemoryPorts  # noqa: E402
from flows.dispatch.logic import DeviceArrays, allocate_setpoints, proportional_split  # noqa: E402
from flows.dispatch.state import DeviceReading, DispatchState, Emitted  # noqa: E402
from vpp.assets import Asset  # noqa: E402
from vpp.config import Settings  # noqa: E402
from vpp.serde import Serde  # noqa: E402

T0 = 1_800_000_000_000
HOUR = 3_600_000


def fleet(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hw = np.array([(13500, 5000, 5000), (13500, 5000, 11500), (10000, 4800, 4800), (5000, 2500, 2500), (16000, 7600, 7600)])
    pick = hw[rng.integers(0, len(hw), n)]
    return {"ids": np.array([f"d{i:06d}" for i in range(n)]), "capacity_wh": pick[:, 0].astype(float),
            "max_charge_w": pick[:, 1].astype(float), "max_discharge_w": pick[:, 2].astype(float),
            "reserve_pct": rng.integers(10, 21, n).astype(float), "soc_pct": rng.uniform(20, 95, n),
            "site": np.array([f"us/ca/pge/{94000 + i % 50}/site-{i:06d}" for i in range(n)])}


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_allocate(f, repeat: int) -> tuple[float, float, float]:
    n = len(f["ids"])
    d = DeviceArrays.build(list(f["ids"]), soc_pct=f["soc_pct"], capacity_wh=f["capacity_wh"], reserve_pct=f["reserve_pct"],
                           max_charge_w=f["max_charge_w"], max_discharge_w=f["max_discharge_w"], last_seen_ms=np.full(n, T0))
    target = 0.5 * f["max_discharge_w"].sum()
    ours = _best(lambda: allocate_setpoints(d, target, T0, T0 + HOUR, T0), repeat)
    base = _best(lambda: proportional_split(d, target), repeat)
    a = allocate_setpoints(d, target, T0, T0 + HOUR, T0)
    return ours, base, abs(a.setpoints_w.sum() - a.allocated_w)


def _readings(f, ts: int, idx) -> list[DeviceReading]:
    return [DeviceReading(f["ids"][i], f["site"][i], ts + i % 5000, float(f["soc_pct"][i]), float(f["capacity_wh"][i]),
                          float(f["reserve_pct"][i]), float(f["max_charge_w"][i]), float(f["max_discharge_w"][i]))
            for i in idx]


def bench_reallocate(f) -> tuple[float, float, int]:
    n = len(f["ids"])
    state = DispatchState(window_ms=10_000, staleness_ms=60_000)
    state.on_readings(_readings(f, T0, range(n)), Emitted())
    state.on_command({"command_id": "c", "node_path": "us", "target_w": 0.5 * f["max_discharge_w"].sum(), "start": T0,
                      "end": T0 + HOUR, "issued_by": "bench"}, True, Emitted())
    keep = [i for i in range(n) if i % 10 != 0]  # 10 % fall silent
    for k in range(1, 13):
        state.on_readings(_readings(f, T0 + k * 5000, keep), Emitted())
    # the next window check after the horizon re-allocates: time only that step
    out = Emitted()
    t = time.perf_counter()
    state.advance(state.next_check_ms, out)
    ours = time.perf_counter() - t
    assert out.statuses and out.statuses[-1]["state"] == "reallocated", out.statuses
    d = DeviceArrays.build([f["ids"][i] for i in keep], soc_pct=f["soc_pct"][keep], capacity_wh=f["capacity_wh"][keep],
                           reserve_pct=f["reserve_pct"][keep], max_charge_w=f["max_charge_w"][keep],
                           max_discharge_w=f["max_discharge_w"][keep], last_seen_ms=np.full(len(keep), T0))
    def baseline():  # the least for the same output: a naive split and one set-point record per device
        split = proportional_split(d, 0.5 * f["max_discharge_w"].sum())
        return [{"command_id": "c", "device_id": i, "node_path": "us", "setpoint_w": w, "start": T0, "end": T0 + HOUR}
                for i, w in zip(d.device_ids, split.tolist())]

    return ours, _best(baseline, 3), len(out.setpoints)


class _Part(StatefulSourcePartition):
    def __init__(self, batches, marks):
        self._batches, self._marks = iter(batches), marks

    def next_batch(self):
        batch = next(self._batches)  # StopIteration ends the input
        if batch and batch[0].topic == "dispatch.commands":
            self._marks["command_out"] = time.perf_counter()
        return batch

    def snapshot(self):
        return None


class _Source(FixedPartitionedSource):
    def __init__(self, batches, marks):
        self._batches, self._marks = batches, marks

    def list_parts(self):
        return ["p"]

    def build_part(self, step_id, for_part, resume_state):
        return _Part(self._batches, self._marks)


class _Sink(DynamicSink):
    def __init__(self, marks):
        self._marks = marks

    def build(self, step_id, worker_index, worker_count):
        marks = self._marks

        class _P(StatelessSinkPartition):
            def write_batch(self, items):
                n = sum(1 for m in items if m.topic == "device.commands")
                if n:
                    marks["last_setpoint"] = time.perf_counter()
                    marks["setpoints"] = marks.get("setpoints", 0) + n

        return _P()


def bench_end_to_end(f) -> tuple[float, float, int]:
    n = len(f["ids"])
    serde = Serde.local()
    records = [{"device_id": f["ids"][i], "site_id": f["site"][i].rsplit("/", 1)[1], "region_path": f["site"][i], "ts": T0 + i % 5000,
                "dialect": "sonnen/2", "soc_pct": float(f["soc_pct"][i]), "battery_w": 0.0, "solar_w": 0.0, "load_w": 500.0,
                "grid_w": 500.0, "grid_connected": True, "capacity_wh": float(f["capacity_wh"][i]), "flags": []} for i in range(n)]
    values = serde.encode_many("telemetry.canonical", records)
    msgs = [KafkaSourceMessage(r["device_id"].encode(), v, "telemetry.canonical", partition=0, offset=i) for i, (r, v) in enumerate(zip(records, values))]
    batches = [msgs[i:i + 1000] for i in range(0, n, 1000)]
    command = {"command_id": "c", "node_path": "us", "target_w": 0.5 * float(f["max_discharge_w"].sum()), "start": T0,
               "end": T0 + HOUR, "issued_by": "bench"}
    batches.append([KafkaSourceMessage(b"us", serde.encode("dispatch.commands", command), "dispatch.commands", partition=0, offset=0)])
    assets = {f["ids"][i]: Asset(f["ids"][i], f["site"][i].rsplit("/", 1)[1], f["site"][i], "America/Los_Angeles",
                                 float(f["capacity_wh"][i]), float(f["max_charge_w"][i]), float(f["max_discharge_w"][i]),
                                 float(f["reserve_pct"][i])) for i in range(n)}
    marks: dict = {}
    flow = build_flow(Settings(), ports=MemoryPorts(_Source(batches, marks), sink=lambda: _Sink(marks)), assets=StaticAssets(assets), store=None, wall_clock=None)
    run_main(flow)
    ours = marks["last_setpoint"] - marks["command_out"]

    def baseline():
        d = DeviceArrays.build(list(f["ids"]), soc_pct=f["soc_pct"], capacity_wh=f["capacity_wh"], reserve_pct=f["reserve_pct"],
                               max_charge_w=f["max_charge_w"], max_discharge_w=f["max_discharge_w"], last_seen_ms=np.full(n, T0))
        split = proportional_split(d, command["target_w"])
        out = [{"command_id": "c", "device_id": i, "node_path": "us", "setpoint_w": float(w), "start": T0, "end": T0 + HOUR}
               for i, w in zip(f["ids"].tolist(), split.tolist())]
        serde.encode_many("device.commands", out)

    return ours, _best(baseline, 2), marks.get("setpoints", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    f = fleet(args.devices)
    ours, base, err = bench_allocate(f, args.repeat)
    print(f"allocate    {args.devices} devices: {ours * 1000:8.1f} ms   baseline (naive split) {base * 1000:7.1f} ms   "
          f"ratio {ours / base:6.1f}x   |sum - allocated| {err:.2e} W")
    ours, base, emitted = bench_reallocate(f)
    print(f"re-allocate after 10 % drop: {ours * 1000:8.1f} ms   baseline (naive split + records) {base * 1000:7.1f} ms   "
          f"ratio {ours / base:6.1f}x   set points emitted {emitted}")
    ours, base, emitted = bench_end_to_end(f)
    print(f"end to end (flow, no broker): command -> last of {emitted} set points {ours * 1000:8.1f} ms   "
          f"baseline (split + records + Avro) {base * 1000:7.1f} ms   ratio {ours / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
