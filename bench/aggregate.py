"""Throughput, window-close latency and memory of the aggregate flow, against a decode-only baseline.

A synthetic fleet of N devices (default 100,000) under a 5-level tree
(``us/<state>/<utility>/<zip>/<site>``, fanout 4, ~1.1 devices per site),
one reading per device per 10 s window, in event-time order, Avro-encoded
as on ``telemetry.canonical``, held in memory (no broker). In one run:

- baseline: ``Serde.decode`` of every record (what the flow must do at least);
- flow, 1 worker: ``flows.aggregate.flow.build_flow`` from an in-memory source to a
  counting sink (every leaf and node record encoded), end of input flushing
  the last windows; window-close latency = wall time from the source handing
  over the first batch that lets a window close (its end + lateness passed,
  in the data) to the sink receiving that window's root record;
- flow, 2 processes x 1 worker (loopback cluster), the input in 2 partitions.

The baseline and the 1-worker flow run ``--rounds`` times, interleaved, and the best of each is kept:
on this shared machine one run of the same code moved by 30-40 %.

Each flow run is a fresh process (peak RSS = ``ru_maxrss`` of that process).
Prints readings/s and the ratio flow / baseline (target >= 0.5 on one worker).
Live rate: the same input paced at real time (one reading per device per window, as a consumer of a live
topic sees it), on 1 worker and on 2 processes, for the window-close latency against its 1 s target.
Usage: python bench/aggregate.py [--devices 100000] [--windows 6] [--live-windows 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T0_MS = 1_782_064_800_000  # 2026-06-21T18:00:00Z, a window boundary
WINDOW_MS, LATENESS_MS = 10_000, 5_000


def _tree_path(i: int) -> str:
    site = i * 10 // 11  # ~1.1 devices per site
    zip_ = site % 64
    return f"us/s{zip_ // 16}/u{zip_ // 4 % 4}/z{zip_}/site-{site:06d}"


def fleet(devices: int):
    from flows.canonicalize.logic import Asset

    return {f"d{i:06d}": Asset(f"d{i:06d}", f"site-{i * 10 // 11:06d}", _tree_path(i), "UTC", capacity_wh=13_500.0,
                               max_charge_w=5_000.0, max_discharge_w=5_000.0, reserve_pct=10.0)
            for i in range(devices)}


def readings(devices: int, windows: int, partition: int | None = None, partitions: int = 1) -> list[bytes]:
    """Avro values, one reading per device per window, in event-time order (deterministic)."""
    from vpp.serde import Serde

    rng = random.Random(7)
    offsets = [rng.randrange(WINDOW_MS) for _ in range(devices)]
    serde = Serde.local()
    out = []
    for w in range(windows):
        batch = []
        for i in range(devices):
            if partition is not None and i % partitions != partition:
                continue
            batch.append({"device_id": f"d{i:06d}", "site_id": f"site-{i * 10 // 11:06d}", "region_path": _tree_path(i),
                          "ts": T0_MS + w * WINDOW_MS + offsets[i], "dialect": "tesla-gateway/1",
                          "soc_pct": 20.0 + (i % 70), "battery_w": float(rng.randint(-5000, 5000)),
                          "solar_w": float(rng.randint(0, 6000)), "load_w": float(rng.randint(200, 3000)),
                          "grid_w": float(rng.randint(-3000, 3000)), "grid_connected": True, "capacity_wh": 13_500.0,
                          "flags": []})
        batch.sort(key=lambda r: r["ts"])
        out.extend(serde.encode_many("telemetry.canonical", batch))
    return out


# -- one flow run (in its own process) --------------------------------------------------------------------

def run_flow(devices: int, windows: int, process_id: int, addresses: list[str], result: Path, pace: float = 0.0) -> None:
    from bytewax.connectors.kafka import KafkaSourceMessage
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import cluster_main, run_main

    from flows.aggregate.flow import build_flow
    from flows._common.registries import StaticAssets
    from sinks.ports import MemoryPorts
    from vpp.config import Settings
    from vpp.gc_policy import tune_for_streaming
    from vpp.serde import Serde

    partitions = max(1, len(addresses))
    stats = {"first_batch": None, "last_write": None, "records": 0, "closable_at": {}, "root_at": {}}
    max_ts_seen = [T0_MS]

    decode = Serde.local().decode

    class _Part(StatefulSourcePartition):
        """Batches of 1,000; notes when the data first lets each window close.

        Paced (``pace`` x real time), like a consumer of a live topic: each poll returns the readings
        whose event time has come (at most 1,000), and sleeps until the next one is due.
        """

        def __init__(self, values: list[bytes], p: int):
            self._values, self._p, self._i = values, p, 0
            self._started = None
            self._ts = [decode(v)["ts"] for v in values] if pace else []

        def _event_now(self) -> float:
            if self._started is None:
                self._started = time.time()
            return T0_MS + (time.time() - self._started) * 1000 * pace

        def next_awake(self):
            if not pace or self._i >= len(self._values):
                return None
            self._event_now()
            return datetime.fromtimestamp(self._started + (self._ts[self._i] - T0_MS) / 1000 / pace, timezone.utc)

        def next_batch(self):
            if self._i >= len(self._values):
                raise StopIteration()
            end = self._i + 1000
            if pace:
                end = min(end, bisect.bisect_right(self._ts, self._event_now(), self._i))
                if end == self._i:
                    return []
            chunk = self._values[self._i:end]
            now = time.time()  # wall time: comparable between the processes of a cluster run
            if stats["first_batch"] is None:
                stats["first_batch"] = time.time()
            ts = decode(chunk[-1])["ts"]
            if ts > max_ts_seen[0]:
                max_ts_seen[0] = ts
                stats["closable_at"].setdefault((ts - LATENESS_MS - T0_MS) // WINDOW_MS - 1, now)
            msgs = [KafkaSourceMessage(key=None, value=v, topic="telemetry.canonical", partition=self._p,
                                       offset=self._i + k, timestamp=(1, 0)) for k, v in enumerate(chunk)]
            self._i += len(chunk)
            return msgs

        def snapshot(self):
            return self._i

    class _Source(FixedPartitionedSource):
        def list_parts(self):
            return [f"p{p}" for p in range(partitions)]

        def build_part(self, step_id, for_part, resume_state):
            p = int(for_part[1:])
            return _Part(readings(devices, windows, p if partitions > 1 else None, partitions), p)

    class _Sink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            class _P(StatelessSinkPartition):
                def write_batch(self, items):
                    now = time.time()
                    stats["records"] += len(items)
                    stats["last_write"] = time.time()
                    for m in items:
                        if m.key == "us":
                            stats["root_at"].setdefault((m.timestamp_ms - T0_MS) // WINDOW_MS, now)

            return _P()

    flow = build_flow(Settings(), ports=MemoryPorts(_Source(), sink=_Sink), assets=StaticAssets(fleet(devices)),
                      source_partitions=range(partitions), idle_advance=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tune_for_streaming()  # as `vpp run` does
    if addresses:
        cluster_main(flow, addresses, process_id, worker_count_per_proc=1)
    else:
        run_main(flow)
    latencies = [stats["root_at"][w] - stats["closable_at"][w] for w in stats["root_at"] if w in stats["closable_at"]]
    result.write_text(json.dumps({
        "first_batch": stats["first_batch"], "last_write": stats["last_write"], "records": stats["records"],
        "latencies_s": latencies, "closable_at": stats["closable_at"], "root_at": stats["root_at"],
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# -- orchestration ------------------------------------------------------------------------------------------

def _print_live(title: str, runs: list[dict]) -> None:
    """Window-close latency over the processes of a run: root record out - the later partition allowing the close."""
    closable: dict[str, float] = {}
    for r in runs:
        for w, t in r["closable_at"].items():
            closable[w] = max(closable.get(w, t), t)
    roots = {w: t for r in runs for w, t in r["root_at"].items()}
    lat = sorted(roots[w] - closable[w] for w in roots if w in closable)
    print(title)
    if lat:
        print(f"  window-close latency:   median {statistics.median(lat):.2f} s, max {lat[-1]:.2f} s "
              f"({len(lat)} windows; target 1 s)")


def _spawn(args: argparse.Namespace, process_id: int, addresses: list[str], result: Path, *, windows: int | None = None,
           pace: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--devices", str(args.devices),
                             "--windows", str(windows or args.windows), "--pace", str(pace),
                             "--run-flow", str(result), "--process-id", str(process_id),
                             "--addresses", ";".join(addresses)], env={**os.environ, "PYTHONPATH": str(REPO)})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--windows", type=int, default=6)
    p.add_argument("--live-windows", type=int, default=4,
                   help="windows of the live-rate run (input paced at real time: 1 reading per device per window)")
    p.add_argument("--rounds", type=int, default=3, help="baseline and 1-worker flow runs; the best of each is kept")
    p.add_argument("--pace", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--run-flow", default=None, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--addresses", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_flow:
        run_flow(args.devices, args.windows, args.process_id, [a for a in args.addresses.split(";") if a],
                 Path(args.run_flow), args.pace)
        return 0

    from vpp.serde import Serde

    n = args.devices * args.windows
    print(f"aggregate benchmark: {args.devices:,} devices x {args.windows} windows = {n:,} readings, "
          f"best of {args.rounds} rounds (baseline and 1-worker flow interleaved)")
    values = readings(args.devices, args.windows)
    decode = Serde.local().decode

    from vpp.net import free_ports

    with tempfile.TemporaryDirectory() as tmp:
        baselines, flows = [], []
        for k in range(args.rounds):  # interleaved: a change of machine load hits both alike
            t = time.perf_counter()
            for v in values:
                decode(v)
            baselines.append(n / (time.perf_counter() - t))
            one = Path(tmp) / f"one{k}.json"
            _spawn(args, 0, [], one).wait()
            r = json.loads(one.read_text())
            flows.append((n / (r["last_write"] - r["first_batch"]), r))
        del values
        baseline = max(baselines)
        rate1, r = max(flows, key=lambda f: f[0])
        wall = n / rate1
        print(f"baseline (decode only):   {baseline:>10,.0f} readings/s  (rounds: "
              f"{', '.join(f'{b:,.0f}' for b in baselines)})")
        lat = sorted(r["latencies_s"])
        print(f"flow, 1 worker:           {rate1:>10,.0f} readings/s  ({r['records']:,} records out in {wall:.1f} s)"
              f"   ratio to baseline {rate1 / baseline:.2f}  (rounds: {', '.join(f'{f:,.0f}' for f, _ in flows)})")
        if lat:
            print(f"  window-close latency:   median {statistics.median(lat):.2f} s, max {lat[-1]:.2f} s "
                  f"({len(lat)} windows; source batch that allows the close -> root record at the sink)")
        print(f"  memory:                 peak RSS {max(x['peak_rss_mb'] for _, x in flows):,.0f} MB (input held in "
              f"memory: {r['rss_before_mb']:,.0f} MB before the run)")
        addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
        results = [Path(tmp) / f"p{i}.json" for i in range(2)]
        procs = [_spawn(args, i, addresses, results[i]) for i in range(2)]
        for proc in procs:
            proc.wait()
        rs = [json.loads(x.read_text()) for x in results]
        peaks = ", ".join(f"{x['peak_rss_mb']:,.0f}" for x in rs)
        wall2 = max(x["last_write"] or 0 for x in rs) - min(x["first_batch"] or float("inf") for x in rs)
        print(f"flow, 2 processes x 1:    {n / wall2:>10,.0f} readings/s  ({sum(x['records'] for x in rs):,} records out "
              f"in {wall2:.1f} s), peak RSS per process {peaks} MB")
        if args.live_windows:
            rate = args.devices // (WINDOW_MS // 1000)
            live = Path(tmp) / "live.json"
            _spawn(args, 0, [], live, windows=args.live_windows, pace=1.0).wait()
            _print_live(f"live rate, 1 worker:      input paced at {rate:,} readings/s of real time",
                        [json.loads(live.read_text())])
            addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
            results = [Path(tmp) / f"live{i}.json" for i in range(2)]
            procs = [_spawn(args, i, addresses, results[i], windows=args.live_windows, pace=1.0) for i in range(2)]
            for proc in procs:
                proc.wait()
            _print_live(f"live rate, 2 processes:   input paced at {rate:,} readings/s in 2 partitions",
                        [json.loads(x.read_text()) for x in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
