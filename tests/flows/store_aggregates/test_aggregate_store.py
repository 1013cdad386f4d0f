"""store-aggregates on the real broker, PostgreSQL and time-series store; `vpp tree` over what it stored."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from real_services import export_series

from cli.replay import run_pipeline_replay
from sinks.node_state import node_state_rows, read_node_state
from vpp.config import Settings
from vpp.serde import Serde
from cli.tree import tree_rows
from vpp.kafka_security import client_config

VPP = [sys.executable, "-m", "cli"]


def _record(path: str, window_start: int, known: int = 1, battery_w: float = 100.0) -> dict:
    return {"node_path": path, "depth": path.count("/") + 1, "window_start": window_start,
            "window_end": window_start + 10_000, "devices_known": known, "devices_reporting": known,
            "estimated_devices": 0, "battery_w": battery_w, "solar_w": 0.0, "load_w": 0.0, "grid_w": 0.0,
            "energy_available_wh": 1.0, "headroom_wh": 2.0, "discharge_available_w": 3.0, "charge_available_w": 4.0,
            "capacity_wh": 5.0, "soc_pct": 50.0, "late": 0}


def test_node_state_rows_keep_the_newest_window_of_each_node():
    rows = node_state_rows([_record("us", 20_000, battery_w=2.0), _record("us", 10_000, battery_w=1.0),
                            _record("us/ca", 10_000)])
    assert [(r[0], r[2].timestamp(), r[7]) for r in rows] == [("us", 20.0, 2.0), ("us/ca", 10.0, 100.0)]


def test_tree_rows_indent_children_and_hide_empty_nodes():
    rows = [_record("us/ca", 0), _record("us", 0, known=2), _record("us/ca/s1/d1", 0, known=0), _record("us/tx", 0)]
    cells = tree_rows(rows)
    assert [c[0] for c in cells] == ["us", "  ca", "  tx"]
    assert [c[0] for c in tree_rows(rows, include_empty=True)][-2] == "      d1"


@pytest.fixture(scope="module")
def small_fleet(tmp_path_factory) -> list[dict]:
    d = tmp_path_factory.mktemp("small")
    raw, assets = d / "raw.jsonl", d / "assets.csv"
    subprocess.run(VPP + ["simulate", "--devices", "40", "--duration", "60", "--seed", "3", "--start",
                          "2025-03-04T05:00:00Z", "--dump", str(raw), "--assets-out", str(assets), "--no-register"],
                   check=True, capture_output=True)
    out = d / "out"
    out.mkdir()
    run_pipeline_replay(Settings(), raw, assets, out)
    with open(out / "fleet.aggregates.jsonl", "rb") as fh:
        return [orjson.loads(line)["value"] for line in fh]


def _publish(settings, records: list[dict]) -> None:
    serde = Serde.from_settings(settings)
    topic = settings.topic("fleet.aggregates")
    producer = Producer(client_config(settings))
    for r in records:
        producer.produce(topic, serde.encode(topic, r), r["node_path"], timestamp=r["window_start"])
    producer.flush(30)


def _run_store(settings) -> None:
    from bytewax.testing import run_main

    import flows.store_aggregates.flow as store_aggregates
    from sinks.ports import KafkaPorts

    run_main(store_aggregates.build_flow(settings, ports=KafkaPorts(settings, tail=False)))


def _table(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT node_path, depth, window_start, devices_known, battery_w, soc_pct, late "
                            "FROM node_state ORDER BY node_path").fetchall()


def _series_points(timeseries_url: str, paths: set[str], start_ms: int, end_ms: int) -> Counter:
    return Counter((labels["node_path"], ts) for labels, timestamps, _ in
                   export_series(timeseries_url, "fleet_node_devices_known", start_ms, end_ms)
                   if labels["node_path"] in paths for ts in timestamps)


@pytest.mark.timeout(300)
def test_store_keeps_the_latest_window_per_node_and_absorbs_redelivery(isolated_settings, small_fleet, capsys,
                                                                       monkeypatch):
    settings = isolated_settings
    records = small_fleet
    _publish(settings, records)
    _run_store(settings)

    latest: dict[str, dict] = {}
    for r in records:
        if r["node_path"] not in latest or r["window_start"] >= latest[r["node_path"]]["window_start"]:
            latest[r["node_path"]] = r
    table = _table(settings.postgres_dsn)
    assert [(row[0], row[2].timestamp() * 1000, row[3], row[4]) for row in table] == \
        [(p, r["window_start"], r["devices_known"], r["battery_w"]) for p, r in sorted(latest.items())]

    # re-delivered and older records change nothing
    _publish(settings, records[: len(records) // 2] + records)
    _run_store(settings)
    assert _table(settings.postgres_dsn) == table

    # one series per node, one point per window
    want = Counter((r["node_path"], r["window_start"]) for r in records)
    start, end = min(r["window_start"] for r in records), max(r["window_start"] for r in records)
    points: Counter = Counter()
    deadline = time.monotonic() + 30
    while set(points) != set(want) and time.monotonic() < deadline:
        time.sleep(1)
        points = _series_points(settings.timeseries_url, set(latest), start, end)
    assert set(points) == set(want)

    # `vpp tree` reads the same table
    rows = read_node_state(settings.postgres_dsn, "us", levels=1)
    assert rows[0]["node_path"] == "us" and all(r["depth"] <= 2 for r in rows) and len(rows) > 1
    monkeypatch.setenv("VPP_POSTGRES_DSN", settings.postgres_dsn)
    monkeypatch.setenv("COLUMNS", "200")
    from cli.main import main

    assert main(["tree", "us", "--depth", "1", "--state-dir", str(Path(settings.state_dir))]) == 0
    shown = capsys.readouterr().out
    root = latest["us"]
    assert f"{root['devices_known']}" in shown and "us" in shown
    capsys.readouterr()
    assert main(["tree", "nowhere", "--state-dir", str(Path(settings.state_dir))]) == 1
    assert "no node 'nowhere' in the fleet tree (its roots: us)" in capsys.readouterr().err
