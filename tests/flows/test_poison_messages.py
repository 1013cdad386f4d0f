"""One bad message never stops a flow: every poison kind, on the real broker, against every consumer flow.

Each consumer flow runs as `vpp run FLOW` on the test's own topics. Its input topic gets, in this order,
a tombstone, a value with an unknown schema id, a record written with another topic's schema, junk bytes,
a truncated record, and then good messages. Afterwards every flow is still running, each poison message is
a dead letter with its reason code and source coordinates (from every flow that consumes its topic), and
the good messages after the poison were processed. canonicalize gets an oversized raw message near the
producer's 1,000,000-byte limit: its dead letter is capped and still fits the DLQ topic.
"""

from __future__ import annotations

import hashlib
import time

import psycopg
import pytest
from confluent_kafka import Producer
from poison import DEVICE, POISON_REASONS, canonical_reading, poison_values
from real_services import VppProcesses, export_series, vpp_env, wait_for

from sinks.kafka_tools import iter_topic
from vpp.dead_letters import RAW_KEEP_BYTES
from vpp.serde import Serde, SerdeError
from vpp.kafka_security import client_config

#: (flow, an Avro topic it consumes that gets the poison): every consumer flow of the platform. store-dlq is apart:
#: a dead letter that cannot itself be decoded becomes a row of its own, not another dead letter (that would loop).
CONSUMERS = [
    ("aggregate", "telemetry.canonical"),
    ("dispatch", "telemetry.canonical"),
    ("store-telemetry", "telemetry.canonical"),
    ("alerts", "telemetry.canonical"),
    ("alerts", "fleet.aggregates"),
    ("store-aggregates", "fleet.aggregates"),
    ("peak-shaving", "fleet.aggregates"),
    ("autobidder", "fleet.aggregates"),
    ("forecast-worker", "autobidder.forecast.requests"),
    ("optimize-worker", "autobidder.optimize.requests"),
    ("store-alerts", "fleet.alerts"),
]
FLOWS = sorted({flow for flow, _ in CONSUMERS} | {"canonicalize", "store-dlq"})
def node_aggregate(window_start: int) -> dict:
    return {"node_path": "us/pz", "depth": 1, "window_start": window_start, "window_end": window_start + 10_000,
            "devices_known": 1, "devices_reporting": 1, "estimated_devices": 0, "battery_w": 1.0, "solar_w": 0.0,
            "load_w": 1.0, "grid_w": 0.0, "energy_available_wh": 1000.0, "headroom_wh": 100.0,
            "discharge_available_w": 5000.0, "charge_available_w": 5000.0, "capacity_wh": 13500.0, "soc_pct": 50.0,
            "late": 0}


def optimize_request(now_ms: int) -> dict:
    return {"request_id": "o-good", "node_path": "us/pz", "interval_start": now_ms, "prices_usd_per_mwh": [30.0, 80.0],
            "capacity_wh": 13500.0, "max_charge_w": 5000.0, "max_discharge_w": 5000.0, "soc_pct": 50.0,
            "reserve_pct": 10.0, "efficiency": 0.9, "degradation_usd_per_mwh": 5.0, "requested_at": now_ms}


def fleet_alert(now_ms: int) -> dict:
    return {"alert_id": "a-good", "rule": "low_soc", "subject": DEVICE, "node_path": "us/pz/site-p", "state": "firing",
            "severity": "warning", "value": 5.0, "threshold": 10.0, "started_at": now_ms - 300_000, "at": now_ms,
            "summary": "SoC 5 % below 10 % for 300 s"}


def forecast_request(now_ms: int) -> dict:
    return {"request_id": "r-good", "node_path": "us/pz", "pricing_node": "us/pz", "interval_start": now_ms,
            "horizon": 4, "history_start": now_ms - 8 * 300_000, "history_usd_per_mwh": [30.0] * 8,
            "requested_at": now_ms}


@pytest.mark.timeout(300)
def test_every_poison_kind_is_a_dead_letter_and_every_consumer_goes_on(isolated_settings, tmp_path):
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    topic = settings.topic
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO assets (device_id, site_id, region_path, timezone, capacity_wh, max_charge_w, "
                     "max_discharge_w, reserve_pct) VALUES (%s, 'site-p', 'us/pz/site-p', 'UTC', 13500, 5000, 5000, 10)",
                     (DEVICE,))
    now = int(time.time() * 1000)
    goods = {
        "telemetry.canonical": [serde.encode(topic("telemetry.canonical"), canonical_reading(now - 30_000 + i * 2_000))
                                for i in range(16)],
        "fleet.aggregates": [serde.encode(topic("fleet.aggregates"), node_aggregate(now - 60_000))],
        "autobidder.forecast.requests": [serde.encode(topic("autobidder.forecast.requests"), forecast_request(now))],
        "autobidder.optimize.requests": [serde.encode(topic("autobidder.optimize.requests"), optimize_request(now))],
        "fleet.alerts": [serde.encode(topic("fleet.alerts"), fleet_alert(now))],
        # store-dlq's own input: the poison, then a good dead letter
        "telemetry.dlq": [serde.encode(topic("telemetry.dlq"), {
            "reason": "malformed_json", "detail": "good", "raw": b"{", "source_topic": "t", "source_partition": 0,
            "source_offset": 1, "device_id": DEVICE, "source_timestamp": now, "raw_length": 1,
            "raw_sha256": hashlib.sha256(b"{").hexdigest(), "raw_truncated": False})],
    }
    producer = Producer(client_config(settings))
    for base, values in goods.items():
        for value in poison_values(serde, topic("dispatch.commands"), values[0]) + values:
            producer.produce(topic(base), value, DEVICE.encode(), timestamp=now)
    oversized = b'{"device_id": "' + b"x" * 990_000 + b'"}'
    producer.produce(topic("telemetry.raw"), oversized, DEVICE.encode(), timestamp=now)
    assert producer.flush(30) == 0

    thresholds = tmp_path / "peak-shaving.toml"
    thresholds.write_text('[peak_shaving]\ncommand_s = 900\n[peak_shaving.nodes."us/pz"]\nthreshold_w = 1e9\n')
    extra = {"peak-shaving": {"VPP_CONFIG": str(thresholds)},
             "autobidder": {"VPP_AUTOBIDDER_NODES": "us/pz", "VPP_MARKET_URL": "http://127.0.0.1:9"}}
    with VppProcesses(vpp_env(settings), tmp_path / "flows.log") as procs:
        running = {flow: procs.start("run", flow, **extra.get(flow, {})) for flow in FLOWS}

        def dead_letters() -> list[dict]:
            """The dead letters on the topic (the poison put there for store-dlq is not one)."""
            out = []
            for m in iter_topic(settings, topic("telemetry.dlq"), timeout_s=30):
                try:
                    out.append(serde.decode(m.value(), topic("telemetry.dlq")))
                except SerdeError:
                    pass
            return out

        expected = len(POISON_REASONS) * len(CONSUMERS) + 1 + 1  # + the oversized raw message + the good dead letter
        wait_for(lambda: len(dead_letters()) >= expected, 180, f"{expected} dead letters")

        # the good messages after the poison were processed
        def status_of_forecast() -> bool:
            return any(True for _ in iter_topic(settings, topic("autobidder.forecast.results"), timeout_s=30))

        wait_for(status_of_forecast, 60, "the forecast worker's answer to the good request")
        wait_for(lambda: list(export_series(settings.timeseries_url, "telemetry_soc_pct", now - 60_000, now + 60_000)),
                 60, "store-telemetry's points of the good readings")
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM node_state WHERE node_path = 'us/pz'").fetchone()[0],
                     60, "store-aggregates' row of the good aggregate")
            wait_for(lambda: conn.execute("SELECT count(*) FROM alerts WHERE alert_id = 'a-good'").fetchone()[0],
                     60, "store-alerts' row of the good alert")
            dlq_rows = lambda: conn.execute("SELECT reason FROM telemetry_dlq WHERE source_topic = %s",  # noqa: E731
                                            (topic("telemetry.dlq"),)).fetchall()
            wait_for(lambda: len(dlq_rows()) >= len(POISON_REASONS), 60, "store-dlq's rows of the poison dead letters")
            assert sorted(r[0] for r in dlq_rows()) == sorted(POISON_REASONS)
            wait_for(lambda: conn.execute("SELECT count(*) FROM telemetry_dlq WHERE detail = 'good'").fetchone()[0],
                     60, "store-dlq's row of the good dead letter")
        wait_for(lambda: any(True for _ in iter_topic(settings, topic("autobidder.optimize.results"), timeout_s=30)),
                 90, "the optimize worker's answer to the good request")
        wait_for(lambda: any(True for _ in iter_topic(settings, topic("fleet.aggregates"), timeout_s=30)
                             if _.key() is not None and b"us/pz" in _.key()), 90, "aggregate's windows of the good readings")
        for flow, proc in running.items():
            assert proc.poll() is None, f"{flow} stopped (exit {proc.returncode}); see {tmp_path / 'flows.log'}"

    letters = dead_letters()
    for base in {t for _, t in CONSUMERS}:
        from_topic = [d for d in letters if d["source_topic"] == topic(base)]
        consumers = sum(1 for _, t in CONSUMERS if t == base)
        assert sorted(d["reason"] for d in from_topic) == sorted(POISON_REASONS * consumers), base
        assert all(d["source_timestamp"] == now and d["source_offset"] < len(POISON_REASONS) for d in from_topic)
    (big,) = [d for d in letters if d["source_topic"] == topic("telemetry.raw")]
    assert big["reason"] == "bad_field:device_id" and big["raw_truncated"] and len(big["raw"]) == RAW_KEEP_BYTES
    assert big["raw_length"] == len(oversized) and big["raw_sha256"] == hashlib.sha256(oversized).hexdigest()


def test_a_topic_recreated_keeps_every_new_dead_letter(isolated_settings):
    """DLQ rows are one per message (position, content hash, Kafka timestamp): offsets reused after a topic is
    recreated no longer make new dead letters vanish as 'duplicates'."""
    from sinks.postgres import DLQ_UPSERT, dlq_rows
    from vpp.dead_letters import dead_letter_record

    first = dead_letter_record("malformed_json", "x", b"one", source_topic="t.raw", source_partition=0, source_offset=7,
                               source_timestamp=1_000)
    again = dict(first)  # the same dead letter read twice
    after_recreation = dead_letter_record("malformed_json", "x", b"two", source_topic="t.raw", source_partition=0,
                                          source_offset=7, source_timestamp=2_000)
    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        conn.cursor().executemany(DLQ_UPSERT, dlq_rows([first, again, after_recreation]))
        rows = conn.execute("SELECT raw FROM telemetry_dlq WHERE source_topic = 't.raw' ORDER BY id").fetchall()
    assert [bytes(r[0]) for r in rows] == [b"one", b"two"]


def test_replay_to_broker_fails_when_records_stay_undelivered(isolated_settings, tmp_path):
    """`vpp replay --to-broker` says so when the broker did not take every record."""
    from cli.replay import publish_dump
    from sinks.dumps import dump_line
    from vpp.errors import UserError

    dump = tmp_path / "raw.jsonl"
    dump.write_bytes(dump_line("telemetry.raw", 0, 0, int(time.time() * 1000), "d", b"x" * 2_000_000))
    with pytest.raises(UserError, match="not delivered"):
        publish_dump(isolated_settings, dump)
