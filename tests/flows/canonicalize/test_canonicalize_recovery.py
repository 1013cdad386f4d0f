"""Kill -9 the canonicalize flow mid-stream and resume it: nothing lost, copies identical, stores identical.

On the real broker, PostgreSQL and time-series store. The expected result is
the same dump replayed without interruption (`vpp replay canonicalize`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from confluent_kafka import Producer
from real_services import export_series, wait_for

from sinks.dumps import base_topic, read_dump
from sinks.kafka_tools import TopicCounter, read_topic
from vpp.serde import Serde, to_json_value
from vpp.kafka_security import client_config

VPP = [sys.executable, "-m", "cli"]
FAULTS = ["--fault-duplicate", "0.03", "--fault-garbage", "0.02", "--fault-nan", "0.02", "--fault-out-of-order", "0.03",
          "--fault-clock-skew", "0.02", "--fault-not-implemented", "0.02"]


def _env(settings) -> dict[str, str]:
    return {**os.environ, "VPP_BROKER": settings.broker, "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
            "VPP_STATE_DIR": settings.state_dir,  # the stack's credentials (stack.json names their files)
            "VPP_POSTGRES_DSN": settings.postgres_dsn, "VPP_TIMESERIES_URL": settings.timeseries_url,
            "VPP_TOPIC_PREFIX": settings.topic_prefix, "VPP_SNAPSHOT_INTERVAL_S": "3"}


def _read_topic(settings, name: str, serde: Serde) -> list[dict]:
    return read_topic(settings, settings.topic(name), lambda v: to_json_value(serde.decode(v)))


def _export_points(timeseries_url: str, device_ids: set[str], start_ms: int, end_ms: int) -> Counter:
    return Counter((labels["device_id"], ts) for labels, timestamps, _ in
                   export_series(timeseries_url, "telemetry_flags", start_ms, end_ms)
                   if labels["device_id"] in device_ids for ts in timestamps)


@pytest.mark.timeout(300)
def test_kill_and_resume_loses_nothing_and_reproduces_identical_copies(isolated_settings, tmp_path):
    settings = isolated_settings
    dump, assets = tmp_path / "raw.jsonl", tmp_path / "assets.csv"
    # a time range no other test uses, so the time-series store can be compared exactly
    # (in the past: VictoriaMetrics refuses points more than 2 days ahead)
    start = f"2025-0{1 + int(settings.topic_prefix[1:3], 16) % 9}-{10 + int(settings.topic_prefix[3:5], 16) % 18}T0{int(settings.topic_prefix[5], 16) % 10}:00:00Z"
    subprocess.run(VPP + ["simulate", "--devices", "60", "--duration", "600", "--rate-s", "5", "--seed", "7",
                          "--start", start, "--dump", str(dump), "--assets-out", str(assets)] + FAULTS, check=True,
                   capture_output=True)
    subprocess.run(VPP + ["assets", "import", str(assets)], check=True, env=_env(settings), capture_output=True)
    expected_dir = tmp_path / "expected"
    subprocess.run(VPP + ["replay", "canonicalize", "--input", str(dump), "--assets", str(assets), "--out", str(expected_dir)],
                   check=True, capture_output=True)
    expected = {topic: [json.loads(l)["value"] for l in open(expected_dir / f"{topic}.jsonl")]
                for topic in ("telemetry.canonical", "telemetry.dlq")}
    assert len(expected["telemetry.canonical"]) > 6000 and len(expected["telemetry.dlq"]) > 100

    records = list(read_dump(dump))
    producer = Producer(client_config(settings, **{"partitioner": "murmur2_random"}))

    def publish(chunk) -> None:
        for r in chunk:
            producer.produce(settings.topic("telemetry.raw"), r.value, r.key,
                             partition=r.partition, timestamp=r.ts)
        producer.flush(30)

    recovery = tmp_path / "recovery"
    run = VPP + ["run", "canonicalize", "--recovery-dir", str(recovery)]
    log = open(tmp_path / "flow.log", "ab")
    out = TopicCounter(settings, [settings.topic("telemetry.canonical"), settings.topic("telemetry.dlq")],
                       from_beginning=True)
    flow = subprocess.Popen(run, env=_env(settings), stdout=log, stderr=subprocess.STDOUT)
    try:
        half = len(records) // 2
        for i in range(0, half, 500):  # paced, so the flow takes several snapshots on the way
            publish(records[i:min(i + 500, half)])
            time.sleep(0.4)
        wait_for(lambda: out.poll() is not None and out.total() > len(expected["telemetry.canonical"]) // 4,
                  60, "the flow to produce a quarter of the readings")
        flow.send_signal(signal.SIGKILL)
        flow.wait(10)
        publish(records[half:])
        flow = subprocess.Popen(run, env=_env(settings), stdout=log, stderr=subprocess.STDOUT)
        n_expected = len(expected["telemetry.canonical"]) + len(expected["telemetry.dlq"])
        wait_for(lambda: out.poll() is not None and out.total() >= n_expected, 120, "every reading after the resume")
        time.sleep(2)  # anything still in flight
    finally:
        flow.send_signal(signal.SIGKILL)
        flow.wait(10)
        out.close()

    serde = Serde.from_settings(settings)
    got = {topic: _read_topic(settings, topic, serde) for topic in ("telemetry.canonical", "telemetry.dlq")}
    copies = {}
    for topic, key in (("telemetry.canonical", lambda r: (r["device_id"], r["ts"])),
                       ("telemetry.dlq", lambda r: (r["source_partition"], r["source_offset"]))):
        want = {key(r): r for r in expected[topic]}
        seen: dict = {}
        for r in got[topic]:
            if "source_topic" in r:
                r = {**r, "source_topic": base_topic(r["source_topic"])}
            assert want.get(key(r)) == r, f"{topic}: a re-produced copy differs from the uninterrupted run: {r}"
            seen[key(r)] = seen.get(key(r), 0) + 1
        assert set(seen) == set(want), f"{topic}: {len(set(want) - set(seen))} records lost"
        copies[topic] = sum(seen.values()) - len(seen)
    print(f"re-produced copies after kill -9: {copies}")

    # the stores absorb the copies: the same points and rows as an uninterrupted run
    from bytewax.testing import run_main

    import flows.store_dlq.flow as store_dlq
    import flows.store_telemetry.flow as store_telemetry
    from sinks.ports import KafkaPorts

    run_main(store_telemetry.build_flow(settings, ports=KafkaPorts(settings, tail=False)))
    run_main(store_dlq.build_flow(settings, ports=KafkaPorts(settings, tail=False)))
    canon = expected["telemetry.canonical"]
    want_points = Counter((r["device_id"], r["ts"]) for r in canon)
    points: Counter = Counter()
    deadline = time.monotonic() + 30
    while points != want_points and time.monotonic() < deadline:  # the store makes fresh points searchable within seconds
        time.sleep(1)
        points = _export_points(settings.timeseries_url, {r["device_id"] for r in canon},
                                min(r["ts"] for r in canon), max(r["ts"] for r in canon))
    assert points == want_points
    import psycopg

    with psycopg.connect(settings.postgres_dsn) as conn:
        rows = conn.execute("SELECT source_partition, source_offset, reason FROM telemetry_dlq").fetchall()
    assert sorted(rows) == sorted((r["source_partition"], r["source_offset"], r["reason"]) for r in expected["telemetry.dlq"])


def test_dedup_bucket_resumes_from_its_pickled_snapshot_and_from_an_older_dict_snapshot():
    from flows.canonicalize.flow import DedupBucket

    reading = {"device_id": "d1", "ts": 1_000}
    first = DedupBucket(None, horizon_ms=60_000)
    [(fresh, duplicates)], _ = first.on_batch([[reading]])
    assert (len(fresh), duplicates) == (1, 0)
    for resume in (first.snapshot(), first.states):  # bytes now; the live dict is what older versions stored
        again = DedupBucket(resume, horizon_ms=60_000)
        [(fresh, duplicates)], _ = again.on_batch([[dict(reading)]])
        assert (fresh, duplicates) == ([], 1), "a copy seen before the snapshot is a duplicate after the resume"


@given(st.lists(st.tuples(st.sampled_from(["d1", "d2", "d3"]), st.integers(0, 400)), max_size=300),
       st.integers(1, 6), st.sampled_from([4, 40, 100, 1000]))
@settings(max_examples=200, deadline=None)
def test_a_dedup_bucket_keeps_exactly_what_dedup_step_keeps_whatever_the_batches(events, batches, horizon_ms):
    """The bucket's inline path for a device's next reading must agree with ``dedup_step`` on every stream."""
    from flows.canonicalize.flow import DedupBucket
    from flows.canonicalize.logic import dedup_step

    readings = [{"device_id": device, "ts": ts} for device, ts in events]
    expected, states = [], {}
    for r in readings:
        states[r["device_id"]], (kept, _) = dedup_step(states.get(r["device_id"]), r, horizon_ms)
        if kept is not None:
            expected.append(kept)
    bucket, kept_by_bucket, duplicates = DedupBucket(None, horizon_ms=horizon_ms), [], 0
    size = max(1, len(readings) // batches)
    for start in range(0, len(readings), size):
        [(fresh, dups)], _ = bucket.on_batch([readings[start:start + size]])
        kept_by_bucket += fresh
        duplicates += dups
    assert kept_by_bucket == expected
    assert duplicates == len(readings) - len(expected)
    assert {d: (s.newest_ts, s.seen, s.pruned_below) for d, s in bucket.states.items()} == \
        {d: (s.newest_ts, s.seen, s.pruned_below) for d, s in states.items()}
