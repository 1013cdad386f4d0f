"""The aggregate flow over a simulated fleet (500 devices, 5 minutes, faults on), replayed without services.

Exactness: in every window, every additive field of every node equals the sum over its children, exactly
(in mW / mWh: ``round(x * 1000)``). Determinism: the same records on 1 worker and on 2 processes x 2 workers,
and byte-identical files run after run.
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from flows.aggregate.flow import AGGREGATE_BUCKETS, DeviceBuckets
from flows.aggregate.logic import WindowParams
from cli.main import main
from cli.replay import run_pipeline_replay
from flows.aggregate.replay import run_aggregate_replay
from sinks.dumps import canonical_jsonl_to_dump
from sinks.dumps import dump_line
from vpp.config import Settings

VPP = [sys.executable, "-m", "cli"]
ADDITIVE = ("devices_known", "devices_reporting", "estimated_devices", "battery_w", "solar_w", "load_w", "grid_w",
            "energy_available_wh", "headroom_wh", "discharge_available_w", "charge_available_w", "capacity_wh", "late")
SETTINGS = Settings()
#: The fleet: 500 devices fill every level of the region tree (tens of thousands of parent-children sums to check)
#: and, with faults on, give late readings and offline devices in every run.
DEVICES = 500


def _records(path: Path) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line)["value"] for line in fh]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fleet")
    raw, assets = d / "raw.jsonl", d / "assets.csv"
    assert main(["simulate", "--devices", str(DEVICES), "--duration", "300", "--dump", str(raw), "--assets-out",
                 str(assets), "--no-register"]) == 0
    out = d / "pipeline"
    out.mkdir()
    run_pipeline_replay(SETTINGS, raw, assets, out)
    return {"raw": raw, "assets": assets, "out": out, "canonical_dump": out / "telemetry.canonical.dump.jsonl"}


def test_every_node_is_exactly_the_sum_of_its_children_in_every_window(fleet):
    records = _records(fleet["out"] / "fleet.aggregates.jsonl")
    by_window: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in records:
        assert (r["node_path"]) not in by_window[r["window_start"]], "one record per node and window"
        by_window[r["window_start"]][r["node_path"]] = r
    assert len(by_window) >= 30
    checked = 0
    for window, nodes in by_window.items():
        children: dict[str, list[dict]] = defaultdict(list)
        for path, r in nodes.items():
            assert r["depth"] == path.count("/") + 1 and r["window_end"] == window + 10_000
            if r["depth"] > 1:
                children[path.rpartition("/")[0]].append(r)
        for path, kids in children.items():
            parent = nodes[path]  # every node with a child in a window has its own record in that window
            for name in ADDITIVE:
                assert round(parent[name] * 1000) == sum(round(k[name] * 1000) for k in kids), (window, path, name)
            checked += 1
    assert checked > 25 * DEVICES
    # the fleet is all there: at the root, the devices minus a few offline or skewed
    root = [r for r in records if r["node_path"] == "us" and r["devices_reporting"] > 0.75 * DEVICES]
    assert len(root) >= 28
    assert all(0.95 * DEVICES <= r["devices_known"] <= DEVICES for r in root)
    assert all(r["devices_known"] == r["devices_reporting"] + r["estimated_devices"] for r in records)
    assert sum(r["late"] for r in records if r["depth"] == 1) > 0  # faults on: some readings came too late


def test_same_records_on_one_worker_and_on_two_processes_of_two_workers(fleet, tmp_path):
    run_aggregate_replay(SETTINGS, fleet["canonical_dump"], fleet["assets"], tmp_path / "cluster", processes=2, workers=2)
    one = (fleet["out"] / "fleet.aggregates.jsonl").read_bytes()
    assert (tmp_path / "cluster" / "fleet.aggregates.jsonl").read_bytes() == one


def test_replay_is_byte_identical_run_after_run(fleet, tmp_path):
    subprocess.run(VPP + ["replay", "aggregate", "--input", str(fleet["canonical_dump"]), "--assets", str(fleet["assets"]),
                          "--out", str(tmp_path / "again")], check=True, capture_output=True)
    assert (tmp_path / "again" / "fleet.aggregates.jsonl").read_bytes() == \
        (fleet["out"] / "fleet.aggregates.jsonl").read_bytes()
    assert (tmp_path / "again" / "telemetry.dlq.jsonl").read_bytes() == b""


def test_a_dump_written_partition_after_partition_is_not_late(fleet, tmp_path):
    """`vpp dump` writes partition 0 entirely, then 1, ...: the per-partition watermark waits for each."""
    lines: dict[int, list[bytes]] = defaultdict(list)
    with open(fleet["out"] / "telemetry.canonical.jsonl", "rb") as fh:
        for line in fh:
            value = orjson.loads(line)["value"]
            p = zlib.crc32(value["device_id"].encode()) % 4
            lines[p].append(dump_line("telemetry.canonical", p, len(lines[p]), value["ts"], value["device_id"],
                                      orjson.dumps(value).decode()))
    dump = tmp_path / "by-partition.jsonl"
    dump.write_bytes(b"".join(b"".join(lines[p]) for p in sorted(lines)))
    run_aggregate_replay(SETTINGS, dump, fleet["assets"], tmp_path / "out")
    records = _records(tmp_path / "out" / "fleet.aggregates.jsonl")
    time_ordered = _records(fleet["out"] / "fleet.aggregates.jsonl")

    def late(rs):
        return sum(r["late"] for r in rs if r["depth"] == 1)

    assert late(records) <= late(time_ordered) * 1.1 + 10
    # the same fleet in the same windows; devices whose clocks run minutes behind differ (late or not
    # depends on what arrived before them), hence the small tolerance
    reporting = {r["window_start"]: r["devices_reporting"] for r in records if r["node_path"] == "us"}
    reporting_ordered = {r["window_start"]: r["devices_reporting"] for r in time_ordered if r["node_path"] == "us"
                         and r["devices_reporting"] > 0.75 * DEVICES}
    assert len(reporting_ordered) >= 29
    assert all(abs(reporting[w] - n) <= DEVICES // 100 for w, n in reporting_ordered.items())


def test_undecodable_message_is_a_dead_letter_and_the_rest_still_counts(tmp_path, fleet):
    good = fleet["out"] / "telemetry.canonical.jsonl"
    dump = tmp_path / "mixed.jsonl"
    canonical_jsonl_to_dump(good, dump)
    head = dump.read_bytes().splitlines(keepends=True)[:3000]
    bad = dump_line("telemetry.canonical", 0, 3000, 0, "pw-x", '"not a canonical record"')
    dump.write_bytes(b"".join(head) + bad)
    run_aggregate_replay(SETTINGS, dump, fleet["assets"], tmp_path / "out")
    dlq = _records(tmp_path / "out" / "telemetry.dlq.jsonl")
    assert [(d["reason"], d["source_offset"], d["device_id"]) for d in dlq] == [("malformed_avro", 3000, "pw-x")]
    assert any(r["devices_reporting"] > 0 for r in _records(tmp_path / "out" / "fleet.aggregates.jsonl"))


def test_a_clock_running_ahead_of_the_rest_is_counted_at_the_end_of_the_dump_as_live(fleet, tmp_path):
    """Its readings lie past the robust watermark till the end; live, the wall clock closes their windows
    later, so replay closes them at the end of its input (they were left out, counted in a metric only)."""
    records = sorted(_records(fleet["out"] / "telemetry.canonical.jsonl"), key=lambda r: (r["ts"], r["device_id"]))
    start = records[0]["ts"]
    head = [r for r in records if r["ts"] < start + 60_000]  # one minute of the fleet
    ahead = head[0]["device_id"]
    lines = []
    for offset, r in enumerate(head):  # in arrival order; the device's clock says 100 s later
        value = {**r, "ts": r["ts"] + 100_000} if r["device_id"] == ahead else r
        lines.append(dump_line("telemetry.canonical", 0, offset, r["ts"], r["device_id"], orjson.dumps(value).decode()))
    dump = tmp_path / "ahead.jsonl"
    dump.write_bytes(b"".join(lines))
    run_aggregate_replay(SETTINGS, dump, fleet["assets"], tmp_path / "one")
    out = _records(tmp_path / "one" / "fleet.aggregates.jsonl")
    shifted = {(r["ts"] + 100_000) // 10_000 * 10_000 for r in head if r["device_id"] == ahead}
    leaf = {r["window_start"] for r in out if r["node_path"].endswith("/" + ahead) and r["devices_reporting"] == 1}
    assert shifted and leaf == shifted
    roots = {r["window_start"]: r for r in out if r["node_path"] == "us"}
    assert all(roots[w]["devices_reporting"] >= 1 for w in shifted)
    # every bucket closes the same last windows: the result does not depend on how devices spread over workers
    run_aggregate_replay(SETTINGS, dump, fleet["assets"], tmp_path / "cluster", processes=2, workers=2)
    assert (tmp_path / "cluster" / "fleet.aggregates.jsonl").read_bytes() == \
        (tmp_path / "one" / "fleet.aggregates.jsonl").read_bytes()


# -- the device buckets' watermark against a (fake) wall clock ---------------------------------------------------

class _Registry:
    assets: dict = {}


class _Metrics:
    def __init__(self):
        self.late = 0

    def count_late(self, n=1):
        self.late += n

    def count_duplicates(self, n=1):
        pass


def _reading(device: str, t_ms: int) -> tuple:
    return (t_ms, 100.0, 0.0, 0.0, 0.0, 50.0, 10_000.0, "us/ca/site-1", device)


def _closed_windows(out) -> list[int]:
    return sorted({w for kind, w, *_ in out if kind == "leaves"})


def test_a_quiet_partition_stops_holding_the_windows_after_the_idle_time():
    clock = {"now": 1_000_000}
    bucket = DeviceBuckets(None, params=WindowParams(), registry=_Registry(), metrics=_Metrics(),
                           expected_partitions=frozenset({0, 1}), idle_advance=True, now_ms=lambda: clock["now"])
    out, _ = bucket.on_batch([(0, ((0, 12_000), (1, 3_000)), [_reading("d1", 3_000), _reading("d1", 12_000)])])
    assert _closed_windows(out) == []  # partition 1 holds the watermark at 3 s - 5 s
    for step in range(1, 8):  # partition 0 moves on, partition 1 is silent
        clock["now"] += 1_000
        t = 12_000 + step * 5_000
        out, _ = bucket.on_batch([(0, ((0, t),), [_reading("d1", t)])])
        if clock["now"] - 1_000_000 <= 5_000:
            assert _closed_windows(out) == [], step
    assert bucket.state.closed is not None and bucket.state.closed >= 3  # partition 1 idle: 47 s - 5 s


def test_idle_input_closes_the_last_windows_by_wall_clock_and_replay_never_does():
    for idle_advance in (True, False):
        clock = {"now": 1_000_000}
        bucket = DeviceBuckets(None, params=WindowParams(), registry=_Registry(), metrics=_Metrics(),
                               expected_partitions=None, idle_advance=idle_advance, now_ms=lambda: clock["now"])
        out, _ = bucket.on_batch([(0, ((0, 26_000),), [_reading("d1", 1_000), _reading("d1", 26_000)])])
        assert _closed_windows(out) == [0, 1]  # watermark 26 s - 5 s
        clock["now"] += 5_000 + 10_000  # idle for the idle time, then 10 s more: 31 s, window 2 (20-30 s) closes
        out, _ = bucket.on_notify()
        assert _closed_windows(out) == ([2] if idle_advance else [])
        assert (bucket.notify_at() is not None) == idle_advance


def test_bucket_count_is_fixed():
    assert AGGREGATE_BUCKETS == 64  # state is found by these keys after a restart: never change it
