"""`vpp simulate --via-gateway URL --certs DIR`: every device with its own certificate (edge.md section 3)."""

from __future__ import annotations

import json
import threading
import time

import psycopg
from edge_helpers import RunningGateway, read_topic

from cli.main import main
from vpp.serde import Serde
from devtools.simulator.faults import NO_FAULTS
from devtools.simulator.gateway_client import run_via_gateway
from devtools.simulator.kafka_io import PublishOptions, register_fleet
from devtools.simulator.tree import build_fleet
from vpp.kafka_security import client_config


def test_the_fleet_speaks_through_the_gateway_and_obeys_its_set_points(edge_settings, platform_pki, tmp_path, monkeypatch):
    from confluent_kafka import Producer

    fleet = build_fleet(12, 3, 2, 7)
    register_fleet(edge_settings.postgres_dsn, fleet)
    monkeypatch.setenv("VPP_POSTGRES_DSN", edge_settings.postgres_dsn)
    monkeypatch.setenv("VPP_PKI_DIR", edge_settings.pki_dir)
    assert main(["pki", "issue", "--all", "--out", str(tmp_path / "certs"), "--state-dir", str(tmp_path / "state")]) == 0

    gateway = RunningGateway(edge_settings)
    stop, result = threading.Event(), {}
    options = PublishOptions(n_devices=12, depth=3, fanout=2, seed=7, rate_s=1.0, duration_s=8.0, faults=NO_FAULTS,
                             assets_out=str(tmp_path / "assets.csv"))
    runner = threading.Thread(target=lambda: result.update(report=run_via_gateway(
        edge_settings, options, gateway.url, tmp_path / "certs", stop)))
    runner.start()
    try:
        target = fleet.assets()[3].device_id
        deadline = time.monotonic() + 30
        while len(gateway.gateway.sessions) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(gateway.gateway.sessions) == 12
        now_ms = int(time.time() * 1000)
        topic = edge_settings.topic("device.commands")
        record = {"command_id": "cmd-sim", "device_id": target, "node_path": "x", "setpoint_w": -800.0,
                  "start": now_ms, "end": now_ms + 300_000}
        producer = Producer(client_config(edge_settings))
        producer.produce(topic, Serde.from_settings(edge_settings).encode(topic, record), target.encode())
        assert producer.flush(10) == 0
        ack = None
        while ack is None and time.monotonic() < deadline + 15:
            with psycopg.connect(edge_settings.postgres_dsn) as conn:
                ack = conn.execute("SELECT device_id, status FROM device_command_acks WHERE command_id = 'cmd-sim'").fetchone()
            time.sleep(0.2)
        assert ack == (target, "applied")
        runner.join(60)  # the simulation ends after 8 s of event time, every reading sent
    finally:
        stop.set()
        runner.join(60)
        gateway.stop()
    report = result["report"]
    assert report.delivery_errors == 0 and report.setpoints_applied == 1
    assert report.produced >= 12 and report.produced == report.stats["sent"]
    on_topic = read_topic(edge_settings, "telemetry.raw", report.produced)
    assert len(on_topic) == report.produced  # each reading once, none lost
    assert all(json.loads(m.value())["device_id"] == m.key().decode() for m in on_topic)


def test_via_gateway_and_certs_go_together(capsys):
    assert main(["simulate", "--devices", "2", "--via-gateway", "wss://127.0.0.1:1/v1/device"]) == 1
    assert "--via-gateway URL and --certs DIR go together" in capsys.readouterr().err


def test_a_device_without_its_certificate_is_named(edge_settings, tmp_path):
    from vpp.errors import UserError

    options = PublishOptions(n_devices=2, depth=2, fanout=2, seed=1, duration_s=1.0, faults=NO_FAULTS,
                             assets_out=str(tmp_path / "assets.csv"))
    try:
        run_via_gateway(edge_settings, options, "wss://127.0.0.1:1/v1/device", tmp_path / "none")
    except UserError as exc:
        assert "lacks device.pem, device.key, ca.pem" in str(exc) and "vpp pki issue --all" in str(exc)
    else:
        raise AssertionError("a missing certificate directory was not reported")
