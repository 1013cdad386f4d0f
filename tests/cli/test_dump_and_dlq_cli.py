"""`vpp replay --to-broker`, `vpp dump` and `vpp dlq list/show` against the real broker and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

from flows.store_dlq.flow import build_flow as build_store_dlq
from sinks.ports import KafkaPorts
from vpp.kafka_security import client_config

VPP = [sys.executable, "-m", "cli"]


def vpp(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VPP_BROKER": settings.broker, "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
            "VPP_STATE_DIR": settings.state_dir,  # the stack's credentials (stack.json names their files)
           "VPP_POSTGRES_DSN": settings.postgres_dsn, "VPP_TOPIC_PREFIX": settings.topic_prefix}
    return subprocess.run(VPP + list(args), capture_output=True, text=True, env=env, timeout=120)


def test_a_dump_republished_and_dumped_again_keeps_keys_timestamps_and_payloads(isolated_settings, tmp_path):
    dump = tmp_path / "raw.jsonl"
    made = subprocess.run(VPP + ["simulate", "--devices", "20", "--duration", "60", "--dump", str(dump),
                                 "--assets-out", str(tmp_path / "a.csv"), "--fault-garbage", "0.05"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    published = vpp(isolated_settings, "replay", "canonicalize", "--input", str(dump), "--to-broker")
    assert published.returncode == 0, published.stderr
    again = tmp_path / "again.jsonl.gz"
    dumped = vpp(isolated_settings, "dump", "telemetry.raw", "--out", str(again))
    assert dumped.returncode == 0, dumped.stderr

    def key(line):
        return line["partition"], line["offset"]

    original = sorted((json.loads(line) for line in open(dump)), key=key)
    copy = sorted((json.loads(line) for line in gzip.open(again, "rt")), key=key)
    assert [(r["partition"], r["offset"], r["key"], r["ts"], r["payload"], r.get("payload_b64")) for r in copy] == \
           [(r["partition"], r["offset"], r["key"], r["ts"], r["payload"], r.get("payload_b64")) for r in original]
    assert all(r["topic"] == isolated_settings.topic("telemetry.raw") for r in copy)
    # garbage that is not UTF-8 went to the broker and came back byte for byte (payload_b64), not as U+FFFD
    assert any("payload_b64" in r for r in copy)


def test_a_dump_with_a_bad_line_publishes_nothing(isolated_settings, tmp_path):
    from sinks.dumps import dump_line

    dump = tmp_path / "raw.jsonl"
    good = [dump_line("telemetry.raw", 0, i, 1_000 + i, "pw-1", '{"device_id": "pw-1"}') for i in range(3)]
    dump.write_bytes(b"".join(good) + b'{"topic": "telemetry.raw", "payl\n')
    published = vpp(isolated_settings, "replay", "canonicalize", "--input", str(dump), "--to-broker")
    assert published.returncode == 1 and "raw.jsonl:4: not a kcat -J dump line" in published.stderr
    assert len(published.stderr.strip().splitlines()) == 1, published.stderr
    dumped = vpp(isolated_settings, "dump", "telemetry.raw", "--out", str(tmp_path / "after.jsonl"))
    assert dumped.returncode == 0 and (tmp_path / "after.jsonl").read_bytes() == b"", "nothing was published"


def test_dead_letters_are_listed_and_shown_with_their_original_bytes(isolated_settings, tmp_path):
    from bytewax.testing import run_main

    from vpp.serde import Serde

    serde = Serde.from_settings(isolated_settings)
    letter = {"reason": "malformed_json", "detail": "not valid UTF-8 JSON", "raw": b"\xff{oops",
              "source_topic": "telemetry.raw", "source_partition": 2, "source_offset": 41, "device_id": None}
    from confluent_kafka import Producer

    producer = Producer(client_config(isolated_settings))
    for _ in range(2):  # at-least-once: the same dead letter twice is one row
        producer.produce(isolated_settings.topic("telemetry.dlq"), serde.encode(isolated_settings.topic("telemetry.dlq"), letter))
    producer.produce(isolated_settings.topic("telemetry.dlq"), b"not avro at all")
    producer.flush(10)
    run_main(build_store_dlq(isolated_settings, ports=KafkaPorts(isolated_settings, tail=False)))

    listed = vpp(isolated_settings, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("malformed_json") == 1 and listed.stdout.count("malformed_avro") == 1
    import psycopg

    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        [(row_id,)] = conn.execute("SELECT id FROM telemetry_dlq WHERE reason = 'malformed_json'").fetchall()
    shown = vpp(isolated_settings, "dlq", "show", str(row_id))
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["raw"] == "\\xff{oops" and doc["source_offset"] == 41 and doc["source_partition"] == 2
    import base64

    assert base64.b64decode(doc["raw_base64"]) == b"\xff{oops"
    missing = vpp(isolated_settings, "dlq", "show", "999999")
    assert missing.returncode == 1 and "no dead letter with id 999999" in missing.stderr


def test_a_dump_of_a_topic_with_poison_keeps_it_and_a_replay_dead_letters_it_as_live(isolated_settings, tmp_path):
    """`vpp dump` writes a value that is not a record of its topic as its exact bytes (and a tombstone as a
    null payload) instead of stopping; `vpp replay` then gives each poison message the reason the live flows give."""
    import orjson
    from confluent_kafka import Producer

    from poison import DEVICE, POISON_REASONS, canonical_reading, poison_values
    from vpp.serde import Serde

    settings = isolated_settings
    serde, topic = Serde.from_settings(settings), settings.topic("telemetry.canonical")
    good = serde.encode(topic, canonical_reading(1_796_000_000_000))
    producer = Producer(client_config(settings))
    for value in poison_values(serde, settings.topic("dispatch.commands"), good) + [good]:
        producer.produce(topic, value, DEVICE.encode(), partition=0, timestamp=1_796_000_000_000)
        producer.flush(30)
    dump = tmp_path / "canonical.jsonl"
    dumped = vpp(settings, "dump", "telemetry.canonical", "--out", str(dump))
    assert dumped.returncode == 0, dumped.stderr
    assets = tmp_path / "assets.csv"
    assets.write_text("device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct\n"
                      f"{DEVICE},site-p,us/pz/site-p,UTC,13500,5000,5000,10\n")
    replayed = vpp(settings, "replay", "aggregate", "--input", str(dump), "--assets", str(assets), "--out", str(tmp_path / "out"))
    assert replayed.returncode == 0, replayed.stderr
    letters = [orjson.loads(line)["value"] for line in open(tmp_path / "out" / "telemetry.dlq.jsonl", "rb")]
    assert [(d["source_offset"], d["reason"]) for d in letters] == list(enumerate(POISON_REASONS))
    assert any(orjson.loads(line)["value"]["node_path"] == "us/pz" for line in open(tmp_path / "out" / "fleet.aggregates.jsonl", "rb"))
