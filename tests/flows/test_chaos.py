"""Chaos: a faulty fleet, the whole pipeline, a random flow killed with SIGKILL every 20-40 s, and poison.

The simulator publishes with faults on; canonicalize, aggregate, dispatch, store-telemetry, store-dlq and
store-aggregates run as `vpp run FLOW --recovery-dir DIR`. Every 20-40 s (a schedule drawn from a fixed,
logged seed) one of them is killed with SIGKILL and started again on its recovery directory. One poison
message of each kind goes to telemetry.canonical mid-run (a tombstone, an unknown schema id, another topic's
record, junk bytes, a truncated record). Then the simulator stops, the flows drain, and every store must
equal an uninterrupted replay of the same input:

- the time-series store holds exactly the (device, ts) points of the canonical replay of the dumped raw topic;
- PostgreSQL ``telemetry_dlq`` holds every dead letter of that replay (by source position and reason) and a
  row for every poison message, with its reason;
- every poison message is a dead letter on the topic from each of its three consumers (aggregate, dispatch,
  store-telemetry: at least one copy each);
- ``fleet.aggregates``, as the stores keep it (the last copy of a window wins: they upsert by node and
  window), against the aggregate replay of the dumped canonical topic, under the rules of ``replay_compare``.

The duration is ``$VPP_CHAOS_S`` seconds (300 for the long run), 90 by default.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import time
from collections import Counter

import psycopg
import pytest
from confluent_kafka import Producer
from real_services import VppProcesses, export_series, vpp_env, wait_for

from replay_compare import (AGG_KEY, canonical_key, compare_aggregates, dump_values, live_span, missing_live, read_jsonl,
                            replay_canonicalize, unprefixed)
from poison import POISON_REASONS, canonical_reading, poison_values
from vpp.serde import Serde
from vpp.kafka_security import client_config

CHAOS_S = float(os.environ.get("VPP_CHAOS_S", "90"))
SEED = 20261207
FLOWS = ["canonicalize", "aggregate", "dispatch", "store-telemetry", "store-dlq", "store-aggregates"]
FAULTS = ["--fault-duplicate", "0.02", "--fault-garbage", "0.01", "--fault-nan", "0.01", "--fault-out-of-order", "0.02",
          "--fault-not-implemented", "0.02", "--fault-clock-skew", "0.02", "--fault-late", "0.002"]
CANONICAL_CONSUMERS = 3  # aggregate, dispatch, store-telemetry


def last_copies(records, key) -> dict:
    """What an upserting store keeps: the last copy of each key."""
    return {key(r): r for r in records}


def inject_poison(settings, serde: Serde) -> list[tuple[int, int, str]]:
    """One poison message of each kind on telemetry.canonical, partition 0: their (partition, offset, reason)."""
    topic = settings.topic("telemetry.canonical")
    good = serde.encode(topic, canonical_reading(int(time.time() * 1000)))
    offsets: list[tuple[int, int]] = []
    producer = Producer(client_config(settings))
    for value in poison_values(serde, settings.topic("dispatch.commands"), good):
        producer.produce(topic, value, b"pw-poison-1", partition=0,
                         on_delivery=lambda err, msg: offsets.append((msg.partition(), msg.offset())))
        producer.flush(30)  # one at a time: offsets in the order of POISON_REASONS
    assert len(offsets) == len(POISON_REASONS)
    return [(p, o, reason) for (p, o), reason in zip(offsets, POISON_REASONS)]


@pytest.mark.timeout(int(CHAOS_S) + 480)
def test_killed_flows_and_poison_leave_every_store_as_an_uninterrupted_replay(isolated_settings, tmp_path):
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    rng = random.Random(SEED)
    print(f"kill schedule seed {SEED}; {CHAOS_S:g} s")
    env = vpp_env(settings, VPP_ASSETS_REFRESH_S="1", VPP_SNAPSHOT_INTERVAL_S="2")
    assets_csv, recovery = tmp_path / "assets.csv", tmp_path / "recovery"
    kills: list[tuple[float, str]] = []
    with VppProcesses(env, tmp_path / "procs.log") as procs:
        sim = procs.start("simulate", "--devices", "40", "--seed", "33", "--rate-s", "2", "--duration", f"{CHAOS_S:g}",
                          "--assets-out", str(assets_csv), *FAULTS)
        wait_for(assets_csv.exists, 90, "the simulator to register its fleet")
        running = {flow: procs.start("run", flow, "--recovery-dir", str(recovery)) for flow in FLOWS}
        t0 = time.monotonic()
        poison: list[tuple[int, int, str]] = []
        next_kill = t0 + rng.uniform(20, 40)
        while sim.poll() is None:
            now = time.monotonic()
            if not poison and now - t0 > CHAOS_S / 3:
                poison = inject_poison(settings, serde)
            if now >= next_kill:
                flow = rng.choice(FLOWS)
                proc = running[flow]
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                procs.procs.remove(proc)
                running[flow] = procs.start("run", flow, "--recovery-dir", str(recovery))
                kills.append((round(now - t0, 1), flow))
                print(f"killed {flow} at {now - t0:.0f} s")
                next_kill = now + rng.uniform(20, 40)
            dead = [f for f, p in running.items() if p.poll() is not None]
            assert not dead, f"{dead} stopped by themselves; see {tmp_path / 'procs.log'}"
            time.sleep(0.5)
        assert sim.returncode == 0, (tmp_path / "procs.log").read_text()[-3000:]
        procs.procs.remove(sim)
        if not poison:
            poison = inject_poison(settings, serde)
        print(f"kills {kills}; poison {poison}")

        raw = procs.dump("telemetry.raw", tmp_path)
        want_canon, replay_dlq = replay_canonicalize(procs, raw, assets_csv, tmp_path / "r-canon")
        want_dlq = [unprefixed(d) for d in replay_dlq]
        want_points = {canonical_key(r) for r in want_canon}
        devices = {r["device_id"] for r in want_canon}
        lo, hi = min(r["ts"] for r in want_canon), max(r["ts"] for r in want_canon)

        # time-series store: the same (device, ts) points
        got: dict = {}

        def points_stored() -> bool:
            procs.check_running()
            got["points"] = {(labels["device_id"], ts) for labels, stamps, _ in
                             export_series(settings.timeseries_url, "telemetry_flags", lo, hi)
                             if labels.get("device_id") in devices for ts in stamps}
            return got["points"] >= want_points

        wait_for(points_stored, 180, f"{len(want_points)} readings in the time-series store")
        assert got["points"] == want_points, f"{len(got['points'] - want_points)} points the replay does not have"

        # PostgreSQL telemetry_dlq: every dead letter of the replay, and every poison message
        raw_topic, canonical_topic = settings.topic("telemetry.raw"), settings.topic("telemetry.canonical")
        want_raw_rows = Counter((d["source_partition"], d["source_offset"], d["reason"]) for d in want_dlq)
        want_poison_rows = {(p, o, reason) for p, o, reason in poison}

        def dlq_rows() -> bool:
            procs.check_running()
            with psycopg.connect(settings.postgres_dsn) as conn:
                rows = conn.execute("SELECT source_topic, source_partition, source_offset, reason FROM telemetry_dlq").fetchall()
            got["raw_rows"] = Counter((p, o, r) for t, p, o, r in rows if t == raw_topic)
            got["poison_rows"] = {(p, o, r) for t, p, o, r in rows if t == canonical_topic}
            return set(got["raw_rows"]) >= set(want_raw_rows) and got["poison_rows"] >= want_poison_rows

        wait_for(dlq_rows, 120, f"{len(want_raw_rows)} dead letters of raw readings and {len(poison)} poison rows in PostgreSQL")
        assert got["raw_rows"] == want_raw_rows, "one row per dead letter, the same as the replay's"
        assert got["poison_rows"] == want_poison_rows

        # every poison message is a dead letter from each consumer of telemetry.canonical
        letters = [d for d in dump_values(procs.dump("telemetry.dlq", tmp_path)) if d["source_topic"] == canonical_topic]
        per_poison = Counter((d["source_partition"], d["source_offset"], d["reason"]) for d in letters)
        assert all(per_poison[p] >= CANONICAL_CONSUMERS for p in want_poison_rows), per_poison

        # fleet.aggregates against the aggregate replay of the dumped canonical topic
        canon_dump = procs.dump("telemetry.canonical", tmp_path)
        procs.run("replay", "aggregate", "--input", str(canon_dump), "--assets", str(assets_csv), "--out",
                  str(tmp_path / "r-agg"))
        want_agg = last_copies(read_jsonl(tmp_path / "r-agg" / "fleet.aggregates.jsonl"), lambda r: tuple(r[k] for k in AGG_KEY))
        input_end = max(r[1] for r in want_points)  # the replay's last window holds it
        with open(assets_csv) as fh:
            device_paths = {a["device_id"]: a["region_path"] for a in csv.DictReader(fh)}

        def aggregates_closed() -> bool:
            procs.check_running()
            records = dump_values(procs.dump("fleet.aggregates", tmp_path))
            got["agg"] = last_copies(records, lambda r: tuple(r[k] for k in AGG_KEY))
            got["agg_copies"] = len(records) - len(got["agg"])
            return live_span(got["agg"])[1] > input_end and not missing_live(got["agg"], want_agg, device_paths)

        wait_for(aggregates_closed, 180, "the live aggregate to close every window of the replay up to the last reading")

    problems, counts = compare_aggregates(got["agg"], want_agg, device_paths)
    print(f"kills {len(kills)} {kills}; points {len(want_points)}; raw dead letters {sum(want_raw_rows.values())}; "
          f"poison {[r for _, _, r in poison]}; aggregate copies {got['agg_copies']}; aggregates {counts}")
    assert not problems, "\n".join(problems)
    assert kills, "the run was too short for a kill"
