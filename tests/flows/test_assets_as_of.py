"""A device moves mid-stream (issue #22): live enrichment follows the move from its time, and a replay of the raw
dump with ``--assets-at`` (the registry through time) gives exactly what live gave: every canonical reading, and
every aggregate of every node and window.

Live: the canonicalize flow runs as ``vpp run canonicalize`` on the real broker and PostgreSQL; the first half
of the readings is processed, the device is moved (``at`` = the first reading of the second half), then the
second half is sent. The aggregates of the live canonical stream (the aggregate flow over its dump) are
compared with ``vpp replay pipeline`` over the raw dump as of the registry's versions: the aggregate flow
itself is deterministic over its input (``test_replay_equals_live`` holds it to its live runs).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson
from confluent_kafka import Producer
from real_services import VppProcesses, vpp_env

from replay_compare import AGG_KEY, canonical_key, diff_keyed, keyed
from sinks.dumps import read_dump

DEVICES = [("d0", "site-a"), ("d1", "site-a"), ("d2", "site-b"), ("d3", "site-b")]
STEP_MS = 2_000
HALF = 15  # readings per device per half


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def envelope(device: str, ts_ms: int, battery_w: float) -> bytes:
    t = _iso(ts_ms)
    part = {"last_communication_time": t}
    return orjson.dumps({"device_id": device, "dialect": "tesla-gateway/1", "received_at": t.replace("+00:00", "Z"),
                         "payload": {"aggregates": {"site": {**part, "instant_power": 100.0},
                                                    "battery": {**part, "instant_power": battery_w},
                                                    "load": {**part, "instant_power": 900.0},
                                                    "solar": {**part, "instant_power": 0.0}},
                                     "soe": {"percentage": 60.0}, "grid_status": "SystemGridConnected"}})


def produce(settings, start_ms: int) -> int:
    from sinks.kafka import producer_config

    producer = Producer(producer_config(settings))
    n = 0
    for k in range(HALF):
        for i, (device, _) in enumerate(DEVICES):
            producer.produce(settings.topic("telemetry.raw"), envelope(device, start_ms + k * STEP_MS + i, 1000.0 * (i + 1)),
                             device)
            n += 1
    assert producer.flush(30) == 0
    return n


def values(settings, topic: str, path) -> list[dict]:
    from cli.replay import dump_topic

    dump_topic(settings, topic, path)
    return [orjson.loads(r.payload) for r in read_dump(path) if r.payload is not None]


def jsonl(path) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line)["value"] for line in fh if line.strip()]


def test_a_move_mid_stream_is_followed_live_from_its_time_and_replayed_as_of_then_identically(isolated_settings, tmp_path):
    from cli.replay import replay
    from sinks.asset_operations import apply_operation

    settings = isolated_settings
    now = int(time.time() * 1000)
    first, middle = now - 150_000, now - 150_000 + HALF * STEP_MS
    for device, site in DEVICES:
        params = {"site_id": site, "region_path": f"us/ca/pge/{site}", "timezone": "UTC", "capacity_wh": 10_000,
                  "max_charge_w": 5_000, "max_discharge_w": 5_000, "reserve_pct": 10, "status": "active"}
        apply_operation(settings, "add", device, params, changed_by="test", at_ms=now - 3_600_000)
    with VppProcesses(vpp_env(settings), tmp_path / "procs.log") as procs:
        procs.start("run", "canonicalize")
        sent = produce(settings, first)
        procs.wait_for(lambda: len(values(settings, "telemetry.canonical", tmp_path / "c.jsonl")) >= sent, 90,
                       "the first half canonicalized live")
        moved = apply_operation(settings, "move", "d0", {"region_path": "us/ca/pge/site-c"}, changed_by="test",
                                reason="feeder change", at_ms=middle)
        assert [e["kind"] for e in moved.events] == ["device_moved"]
        sent += produce(settings, middle)
        procs.wait_for(lambda: len(values(settings, "telemetry.canonical", tmp_path / "c.jsonl")) >= sent, 60,
                       "the second half canonicalized live")
    live = keyed(values(settings, "telemetry.canonical", tmp_path / "canonical.dump.jsonl"), canonical_key)
    paths = {ts: r["region_path"] for (d, ts), r in live.items() if d == "d0"}
    assert paths and all(p == ("us/ca/pge/site-c" if ts >= middle else "us/ca/pge/site-a") for ts, p in paths.items())

    values(settings, "telemetry.raw", tmp_path / "raw.dump.jsonl")
    replay(settings, "pipeline", tmp_path / "raw.dump.jsonl", settings.postgres_dsn, tmp_path / "as-of")
    replayed = keyed(jsonl(tmp_path / "as-of" / "telemetry.canonical.jsonl"), canonical_key)
    assert not diff_keyed(live, replayed, "canonical") and len(live) == len(replayed) == sent

    replay(settings, "aggregate", tmp_path / "canonical.dump.jsonl", settings.postgres_dsn, tmp_path / "live-agg")
    agg_key = lambda r: tuple(r[k] for k in AGG_KEY)  # noqa: E731
    live_agg = keyed(jsonl(tmp_path / "live-agg" / "fleet.aggregates.jsonl"), agg_key)
    replay_agg = keyed(jsonl(tmp_path / "as-of" / "fleet.aggregates.jsonl"), agg_key)
    assert live_agg and not diff_keyed(live_agg, replay_agg, "aggregate") and len(live_agg) == len(replay_agg)
    windows_c = {w for (node, w) in replay_agg if node == "us/ca/pge/site-c"}
    assert windows_c and min(windows_c) >= middle // 10_000 * 10_000  # site-c exists from the move's window on
