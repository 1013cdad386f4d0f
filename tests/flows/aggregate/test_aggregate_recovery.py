"""Kill -9 the aggregate flow mid-window and resume it: no window lost, copies identical, stores identical.

On the real broker, PostgreSQL and time-series store. The expected records
come from `vpp replay aggregate` over the same canonical records, in the
same partitions and order, without interruption. They are published in
event-time order with no delay faults, so no reading is late in either run
and the two must agree record for record. The comparison stops before the
last window of the data: the replay closes it at end of input, the live flow
when its input goes idle, and afterwards the live flow goes on closing
windows by wall clock (devices carried forward, then stale), which a replay
never sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from real_services import export_series, wait_for

from cli.replay import run_pipeline_replay
from flows.aggregate.replay import run_aggregate_replay
from sinks.dumps import dump_line
from vpp.config import Settings
from sinks.kafka_tools import read_topic
from vpp.serde import Serde, to_json_value
from vpp.kafka_security import client_config

VPP = [sys.executable, "-m", "cli"]
PARTITIONS = 4


def _env(settings) -> dict[str, str]:
    return {**os.environ, "VPP_BROKER": settings.broker, "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
            "VPP_STATE_DIR": settings.state_dir,  # the stack's credentials (stack.json names their files)
            "VPP_POSTGRES_DSN": settings.postgres_dsn, "VPP_TIMESERIES_URL": settings.timeseries_url,
            "VPP_TOPIC_PREFIX": settings.topic_prefix, "VPP_SNAPSHOT_INTERVAL_S": "1"}


def _key(r: dict) -> tuple[str, int]:
    return r["node_path"], r["window_start"]


class _OutputWatcher:
    """Collects the (node, window) keys appearing on fleet.aggregates."""

    def __init__(self, settings, serde: Serde):
        topic = settings.topic("fleet.aggregates")
        self._consumer = Consumer(client_config(settings, **{"group.id": "agg-recovery-test",
                                   "enable.auto.commit": False}))
        meta = self._consumer.list_topics(topic, timeout=10)
        self._consumer.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
        self._serde = serde
        self.keys: set[tuple[str, int]] = set()
        self.count = 0

    def poll(self) -> bool:
        for m in self._consumer.consume(5000, timeout=0.2):
            if m.error() is None:
                self.keys.add(_key(self._serde.decode(m.value())))
                self.count += 1
        return True

    def close(self) -> None:
        self._consumer.close()


def _export(timeseries_url: str, metric: str, paths: set[str], start_ms: int, end_ms: int) -> dict:
    return {(labels["node_path"], ts): v for labels, timestamps, values in export_series(timeseries_url, metric, start_ms, end_ms)
            if labels["node_path"] in paths for ts, v in zip(timestamps, values)}


@pytest.mark.timeout(420)
def test_kill_mid_window_and_resume_loses_no_window_and_reproduces_identical_records(isolated_settings, tmp_path):
    settings = isolated_settings
    raw, assets = tmp_path / "raw.jsonl", tmp_path / "assets.csv"
    # a time range no other test uses, so the time-series store can be compared exactly
    start = f"2025-0{1 + int(settings.topic_prefix[1:3], 16) % 9}-{10 + int(settings.topic_prefix[3:5], 16) % 18}T1{int(settings.topic_prefix[5], 16) % 10}:00:00Z"
    subprocess.run(VPP + ["simulate", "--devices", "60", "--duration", "600", "--rate-s", "5", "--seed", "11", "--start",
                          start, "--dump", str(raw), "--assets-out", str(assets), "--no-register", "--no-faults",
                          "--fault-offline", "0.003", "--fault-drop", "0.01", "--fault-duplicate", "0.02"],
                   check=True, capture_output=True)
    subprocess.run(VPP + ["assets", "import", str(assets)], check=True, env=_env(settings), capture_output=True)
    canon_dir = tmp_path / "canonical"
    canon_dir.mkdir()
    run_pipeline_replay(Settings(), raw, assets, canon_dir)
    with open(canon_dir / "telemetry.canonical.jsonl", "rb") as fh:
        canonical = [orjson.loads(line)["value"] for line in fh]
    # in event-time order (canonicalize's output is grouped by dedup bucket within each batch, which for 60
    # devices reorders ~80 s: lateness would then depend on where the batches fall), and with a few
    # at-least-once copies from upstream right after their originals
    canonical.sort(key=lambda r: r["ts"])
    canonical = [c for i, r in enumerate(canonical) for c in ([r, r] if i % 50 == 0 else [r])]
    partition_of = {r["device_id"]: zlib.crc32(r["device_id"].encode()) % PARTITIONS for r in canonical}

    # expected: the same records in the same partitions and the same order, replayed without interruption
    offsets = Counter()
    with open(tmp_path / "canonical.dump.jsonl", "wb") as dump_file:
        for r in canonical:
            p = partition_of[r["device_id"]]
            dump_file.write(dump_line("telemetry.canonical", p, offsets[p], r["ts"], r["device_id"], orjson.dumps(r).decode()))
            offsets[p] += 1
    dump = tmp_path / "canonical.dump.jsonl"
    run_aggregate_replay(Settings(), dump, assets, tmp_path / "expected")
    with open(tmp_path / "expected" / "fleet.aggregates.jsonl", "rb") as fh:
        replayed = [orjson.loads(line)["value"] for line in fh]
    cut = max(r["window_start"] for r in replayed)  # compare every window before the last one
    expected = {_key(r): r for r in replayed if r["window_start"] < cut}
    assert len(expected) > 5_000 and sum(r["estimated_devices"] for r in expected.values() if r["depth"] == 1) > 0

    serde = Serde.from_settings(settings)
    topic = settings.topic("telemetry.canonical")
    producer = Producer(client_config(settings))

    def publish(chunk) -> None:
        for r in chunk:
            producer.produce(topic, serde.encode(topic, r), r["device_id"], partition=partition_of[r["device_id"]],
                             timestamp=r["ts"])
        producer.flush(30)

    run = VPP + ["run", "aggregate", "--recovery-dir", str(tmp_path / "recovery")]
    log = open(tmp_path / "flow.log", "ab")
    watcher = _OutputWatcher(settings, serde)
    flow = subprocess.Popen(run, env=_env(settings), stdout=log, stderr=subprocess.STDOUT)
    try:
        half = len(canonical) // 2
        for i in range(0, half, 240):  # 20 s of event time per chunk, paced: snapshots on the way
            publish(canonical[i:min(i + 240, half)])
            time.sleep(0.3)
        wait_for(lambda: watcher.poll() and len(watcher.keys) > len(expected) // 4, 90,
                  "the flow to close a quarter of the windows")
        flow.send_signal(signal.SIGKILL)
        flow.wait(10)
        killed_at = len(watcher.keys)
        publish(canonical[half:])
        flow = subprocess.Popen(run, env=_env(settings), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: watcher.poll() and set(expected) <= watcher.keys, 150, "every window after the resume")
        except AssertionError:
            missing = sorted(set(expected) - watcher.keys, key=lambda k: (k[1], k[0]))
            raise AssertionError(f"{len(missing)} of {len(expected)} records never came, first {missing[:5]}, "
                                 f"windows {sorted({w for _, w in missing})[:10]}; killed at {killed_at}") from None
        time.sleep(2)  # anything still in flight
    finally:
        flow.send_signal(signal.SIGKILL)
        flow.wait(10)
        watcher.close()
    assert killed_at < len(expected), "the kill came after the last window: nothing was tested"

    got = read_topic(settings, settings.topic("fleet.aggregates"), lambda v: to_json_value(serde.decode(v)))
    copies = Counter(_key(r) for r in got)
    for r in got:
        if r["window_start"] < cut:
            assert expected.get(_key(r)) == r, f"a record differs from the uninterrupted run: {r}"
    assert set(expected) <= set(copies), f"{len(set(expected) - set(copies))} records lost"
    print(f"re-produced records after kill -9: {sum(copies.values()) - len(copies)}")

    # the stores absorb the copies
    from bytewax.testing import run_main

    import flows.store_aggregates.flow as store_aggregates
    from sinks.ports import KafkaPorts

    run_main(store_aggregates.build_flow(settings, ports=KafkaPorts(settings, tail=False)))
    latest: dict[str, dict] = {}
    for r in got:
        if r["node_path"] not in latest or r["window_start"] >= latest[r["node_path"]]["window_start"]:
            latest[r["node_path"]] = r
    with psycopg.connect(settings.postgres_dsn) as conn:
        rows = conn.execute("SELECT node_path, window_start, devices_known, battery_w FROM node_state").fetchall()
    assert sorted((p, int(ws.timestamp() * 1000), k, b) for p, ws, k, b in rows) == \
        sorted((p, r["window_start"], r["devices_known"], r["battery_w"]) for p, r in latest.items())

    paths = {p for p, _ in expected}
    start_ms, end_ms = min(w for _, w in expected), cut - 1
    want = {k: r["battery_w"] for k, r in expected.items()}
    points: dict = {}
    deadline = time.monotonic() + 30
    while set(points) != set(want) and time.monotonic() < deadline:
        time.sleep(1)
        points = {k: v for k, v in _export(settings.timeseries_url, "fleet_node_battery_w", paths, start_ms,
                                           end_ms).items() if k[1] < cut}
    assert points == want
