"""The gateway on real TLS sockets, the real broker and the real database (edge.md section 2)."""

from __future__ import annotations

import json
import ssl
import time

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from edge import pki
from sinks.certificates import revoke
from edge_helpers import ago, client_context, read_topic, register
from vpp.serde import Serde
from vpp.kafka_security import client_config


def envelope(device_id: str, n: int = 0) -> dict:
    return {"device_id": device_id, "dialect": "sonnen/2", "received_at": "2026-12-07T15:00:00.000Z",
            "payload": {"Timestamp": "2026-12-07 07:00:00", "USOC": 50 + n, "Pac_total_W": 100, "Production_W": 0,
                        "Consumption_W": 400, "GridFeedIn_W": -300, "SystemStatus": "OnGrid"}}


def open_device(gateway, cert_dir, platform_pki):
    return connect(gateway.url, ssl=client_context(cert_dir, platform_pki.paths.ca_cert), open_timeout=30)


def answer(ws, timeout_s: float = 15.0) -> dict:
    return json.loads(ws.recv(timeout=timeout_s))


def sessions(settings, device_id: str) -> list[tuple]:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute("SELECT cert_serial, close_code, close_reason FROM gateway_sessions WHERE device_id = %s "
                            "ORDER BY id", (device_id,)).fetchall()


def test_a_valid_device_is_acked_after_its_readings_are_on_telemetry_raw(gateway, platform_pki, edge_settings):
    cert = platform_pki.issue("pw-1")
    sent = [envelope("pw-1", i) for i in range(3)]
    with open_device(gateway, cert, platform_pki) as ws:
        ws.send(json.dumps({"type": "telemetry", "seq": 7, "readings": sent}))
        assert answer(ws) == {"type": "ack", "seq": 7}
    on_topic = read_topic(edge_settings, "telemetry.raw", 3)
    assert sorted((json.loads(m.value()) for m in on_topic), key=json.dumps) == sorted(sent, key=json.dumps)
    assert {m.key() for m in on_topic} == {b"pw-1"}
    assert sessions(edge_settings, "pw-1")[0][0] == (cert / "serial").read_text()


def _refused(gateway, cert_dir, platform_pki) -> Exception:
    with pytest.raises((ssl.SSLError, OSError, InvalidHandshake, ConnectionClosed)) as caught:
        with open_device(gateway, cert_dir, platform_pki) as ws:
            ws.recv(timeout=5)  # TLS 1.3: a refused client certificate shows on the first read
    return caught.value


def _counted(gateway, reason: str, timeout_s: float = 10.0) -> dict:
    """The gateway's refusals by reason once ``reason`` is among them (the client may see the refusal first)."""
    deadline = time.monotonic() + timeout_s
    while not gateway.gateway.refused[reason] and time.monotonic() < deadline:
        time.sleep(0.05)
    return dict(gateway.gateway.refused)


def test_no_client_certificate_is_refused_by_tls_and_counted(gateway, platform_pki, edge_settings):
    _refused(gateway, None, platform_pki)
    assert sessions(edge_settings, "pw-1") == []
    assert _counted(gateway, "no_certificate") == {"no_certificate": 1}


def test_a_certificate_of_another_ca_is_refused_and_counted(gateway, platform_pki, edge_settings):
    other_ca = pki.make_ca(ago(0))
    cert = platform_pki.issue("pw-1", ca=other_ca, record=False)
    _refused(gateway, cert, platform_pki)
    assert sessions(edge_settings, "pw-1") == []
    assert _counted(gateway, "unknown_ca") == {"unknown_ca": 1}


def test_an_expired_certificate_is_refused_and_counted(gateway, platform_pki, edge_settings):
    cert = platform_pki.issue("pw-1", now=ago(3), days=1)
    _refused(gateway, cert, platform_pki)
    assert sessions(edge_settings, "pw-1") == []
    assert _counted(gateway, "expired") == {"expired": 1}


@pytest.mark.parametrize("case", ["revoked", "superseded", "not_registered", "not_recorded"])
def test_refused_before_the_upgrade_with_403_and_the_reason(gateway, platform_pki, edge_settings, case):
    device = "pw-9" if case == "not_registered" else "pw-1"
    cert = platform_pki.issue(device, record=case != "not_recorded")
    if case == "revoked":
        with psycopg.connect(edge_settings.postgres_dsn) as conn:
            revoke(conn, (cert / "serial").read_text(), "lost")
    if case == "superseded":
        newer = platform_pki.issue(device)
        with open_device(gateway, cert, platform_pki) as ws:  # the old one works until the new one is used
            ws.send(json.dumps({"type": "telemetry", "seq": 1, "readings": [envelope(device)]}))
            assert answer(ws)["type"] == "ack"
        with open_device(gateway, newer, platform_pki):
            pass
        assert _status_becomes(edge_settings, (cert / "serial").read_text(), "superseded")  # by the newer one's first use
    with pytest.raises(InvalidStatus) as refused:
        with open_device(gateway, cert, platform_pki):
            pass
    expected = {"revoked": "revoked", "superseded": "superseded", "not_registered": "unknown_device",
                "not_recorded": "unknown_certificate"}[case]
    assert refused.value.response.status_code == 403
    assert refused.value.response.body.decode().strip() == f"refused: {expected}"
    assert dict(gateway.gateway.refused) == {expected: 1}


def _status_becomes(settings, serial: str, status: str, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(settings.postgres_dsn) as conn:
            now = conn.execute("SELECT status FROM device_certificates WHERE serial = %s", (serial,)).fetchone()[0]
        if now == status or time.monotonic() > deadline:
            return now == status
        time.sleep(0.05)


def test_an_envelope_for_another_device_is_a_dead_letter_identity_mismatch(gateway, platform_pki, edge_settings):
    cert = platform_pki.issue("pw-1")
    foreign = envelope("pw-2")
    with open_device(gateway, cert, platform_pki) as ws:
        ws.send(json.dumps({"type": "telemetry", "seq": 3, "readings": [envelope("pw-1"), foreign]}))
        got = answer(ws)
    assert got["type"] == "error" and got["seq"] == 3 and got["reason"].startswith("identity_mismatch")
    dead = [Serde.from_settings(edge_settings).decode(m.value()) for m in read_topic(edge_settings, "telemetry.dlq", 1)]
    assert [(d["reason"], d["device_id"], json.loads(d["raw"])) for d in dead] == [("identity_mismatch", "pw-2", foreign)]
    published = read_topic(edge_settings, "telemetry.raw", 2, timeout_s=3)
    assert [json.loads(m.value())["device_id"] for m in published] == ["pw-1"]


def test_a_revoked_live_session_is_closed_within_5_s(gateway, platform_pki, edge_settings):
    cert = platform_pki.issue("pw-1")
    with open_device(gateway, cert, platform_pki) as ws:
        with psycopg.connect(edge_settings.postgres_dsn) as conn:
            revoke(conn, "pw-1", "stolen")
        revoked_at = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert time.monotonic() - revoked_at < 5.0
        assert closed.value.rcvd.code == 1008
    deadline = time.monotonic() + 5
    while sessions(edge_settings, "pw-1")[0][1] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sessions(edge_settings, "pw-1")[0][1:] == (1008, "certificate revoked")


@pytest.mark.parametrize("frame, reason", [
    ({"type": "telemetry", "seq": 1, "readings": [{"device_id": "pw-1"}] * 501}, "too_many_readings"),
    ({"type": "telemetry", "seq": 1, "readings": [{"device_id": "pw-1", "pad": "x" * 300_000}]}, "frame_too_large"),
    ({"type": "hello"}, "malformed_frame"),
])
def test_frames_beyond_the_limits_are_answered_with_an_error(gateway, platform_pki, frame, reason):
    cert = platform_pki.issue("pw-1")
    with open_device(gateway, cert, platform_pki) as ws:
        ws.send(json.dumps(frame))
        got = answer(ws)
        assert got["type"] == "error" and got["reason"].startswith(reason)
        ws.send(json.dumps({"type": "telemetry", "seq": 2, "readings": [envelope("pw-1")]}))
        assert answer(ws) == {"type": "ack", "seq": 2}  # one refused frame does not end the session


def test_a_device_that_keeps_exceeding_the_limits_is_disconnected(gateway, platform_pki):
    cert = platform_pki.issue("pw-1")
    with open_device(gateway, cert, platform_pki) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(100):
                ws.send(json.dumps({"type": "hello"}))
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008


def test_a_command_reaches_the_right_device_and_its_ack_reaches_the_store(gateway, platform_pki, edge_settings):
    from confluent_kafka import Producer

    one, two = platform_pki.issue("pw-1"), platform_pki.issue("pw-2")
    now_ms = int(time.time() * 1000)
    record = {"command_id": "cmd-1", "device_id": "pw-2", "node_path": "us/ca", "setpoint_w": 1500.0,
              "start": now_ms - 1000, "end": now_ms + 600_000}
    topic = edge_settings.topic("device.commands")
    with open_device(gateway, one, platform_pki) as ws1, open_device(gateway, two, platform_pki) as ws2:
        producer = Producer(client_config(edge_settings))
        producer.produce(topic, Serde.from_settings(edge_settings).encode(topic, record), b"pw-2")
        assert producer.flush(10) == 0
        assert answer(ws2) == {"type": "command", **record}
        with pytest.raises(TimeoutError):
            ws1.recv(timeout=1.0)  # never another device's set point
        ws2.send(json.dumps({"type": "command_ack", "command_id": "cmd-1", "start": record["start"], "status": "applied",
                             "reason": None}))
        deadline, row = time.monotonic() + 10, None
        while row is None and time.monotonic() < deadline:
            with psycopg.connect(edge_settings.postgres_dsn) as conn:
                row = conn.execute("SELECT device_id, status, cert_serial FROM device_command_acks WHERE command_id = 'cmd-1'").fetchone()
            time.sleep(0.1)
        assert row == ("pw-2", "applied", (two / "serial").read_text())
    acks = [Serde.from_settings(edge_settings).decode(m.value()) for m in read_topic(edge_settings, "device.command_acks", 1)]
    assert [(a["command_id"], a["device_id"], a["start"], a["status"]) for a in acks] == [("cmd-1", "pw-2", record["start"], "applied")]
    with open_device(gateway, two, platform_pki) as again:  # reconnecting: the set point to follow now comes first
        assert answer(again) == {"type": "command", **record}

    # the dispatch flow stored the set point it sent; `vpp dispatch show` puts the device's ack next to it
    from sinks.command_control import UPSERTS, control_rows, show_command

    command = {"command_id": "cmd-1", "node_path": "us/ca", "target_w": 1500.0, "start": record["start"],
               "end": record["end"], "issued_by": "test", "program": None, "received_at": None}
    with psycopg.connect(edge_settings.postgres_dsn) as conn:
        for kind, columns in control_rows([("command", command), ("setpoint", record)]).items():
            conn.execute(UPSERTS[kind], columns)
    shown = show_command(edge_settings.postgres_dsn, "cmd-1")
    assert [(p["device_id"], p["ack_status"]) for p in shown["latest_setpoints"]] == [("pw-2", "applied")]
    assert shown["devices_applied"] == 1


def test_the_gateway_url_is_in_the_stack_status(stack, isolated_settings, platform_pki, edge_settings):
    from edge_helpers import RunningGateway
    from devtools.stack import Stack

    running = RunningGateway(edge_settings.replace(state_dir=str(stack.state_dir)))
    try:
        assert Stack(stack.state_dir).status().to_json()["gateway"] == running.url
        assert running.url.startswith("wss://127.0.0.1:") and running.url.endswith("/v1/device")
    finally:
        running.stop()
    assert "gateway" not in Stack(stack.state_dir).status().to_json()


def test_a_device_registered_after_the_gateway_started_is_admitted(gateway, platform_pki, edge_settings):
    register(edge_settings.postgres_dsn, "pw-3")
    cert = platform_pki.issue("pw-3")
    with open_device(gateway, cert, platform_pki) as ws:
        ws.send(json.dumps({"type": "telemetry", "seq": 1, "readings": [envelope("pw-3")]}))
        assert answer(ws) == {"type": "ack", "seq": 1}


def test_a_stopped_broker_makes_the_device_wait_within_its_window_and_loses_nothing(stack, edge_settings, platform_pki):
    import os
    import signal

    from edge_helpers import RunningGateway

    window = edge_settings.gateway_window
    running = RunningGateway(edge_settings.replace(gateway_ping_s=0.5))  # pings every 0.5 s while acks wait
    broker_pid = json.loads((stack.state_dir / "stack.json").read_text())["pids"]["broker"]
    cert = platform_pki.issue("pw-1")
    frames = window + 4
    try:
        with open_device(running, cert, platform_pki) as ws:
            os.kill(broker_pid, signal.SIGSTOP)
            try:
                for seq in range(1, frames + 1):
                    ws.send(json.dumps({"type": "telemetry", "seq": seq, "readings": [envelope("pw-1", seq)]}))
                with pytest.raises(TimeoutError):
                    ws.recv(timeout=3.0)  # no ack while the broker cannot confirm; the pings keep the session
                session = running.gateway.sessions["pw-1"]
                assert session.unacked == window and not session.readable.is_set()  # the rest waits unread
            finally:
                os.kill(broker_pid, signal.SIGCONT)
            acked = [answer(ws, 60.0) for _ in range(frames)]
        assert sorted(a["seq"] for a in acked) == list(range(1, frames + 1)) and {a["type"] for a in acked} == {"ack"}
    finally:
        running.stop()
    on_topic = [json.loads(m.value())["payload"]["USOC"] for m in read_topic(edge_settings, "telemetry.raw", frames + 1, 5)]
    assert sorted(on_topic) == [50 + seq for seq in range(1, frames + 1)]  # each reading once: none lost, none twice


def test_while_the_registry_cannot_be_loaded_devices_are_told_to_try_again_later(edge_settings, platform_pki):
    from edge_helpers import RunningGateway

    cert = platform_pki.issue("pw-1")
    unreachable = edge_settings.replace(postgres_dsn="postgresql://postgres@127.0.0.1:1/vpp")
    running = RunningGateway(unreachable, wait_ready=False)  # its certificate table never loads
    try:
        with open_device(running, cert, platform_pki) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1013
    finally:
        running.stop()


def test_sessions_are_listed_newest_first_and_published_as_fleet_events(gateway, platform_pki, edge_settings,
                                                                         monkeypatch, capsys):
    from cli.main import main

    cert = platform_pki.issue("pw-1")
    for _ in range(2):
        with open_device(gateway, cert, platform_pki):
            pass
    monkeypatch.setenv("VPP_POSTGRES_DSN", edge_settings.postgres_dsn)
    deadline = time.monotonic() + 10
    while any(code is None for _, code, _ in sessions(edge_settings, "pw-1")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert main(["gateway", "sessions", "--device", "pw-1", "--json", "--state-dir", edge_settings.state_dir]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["device_id"], s["cert_serial"], s["close_code"]) for s in listed] == [("pw-1", (cert / "serial").read_text(), 1000)] * 2
    assert listed[0]["id"] > listed[1]["id"]

    serde = Serde.from_settings(edge_settings)
    events = sorted((serde.decode(m.value()) for m in read_topic(edge_settings, "fleet.events", 4)),
                    key=lambda e: (int(e["detail"]["session_id"]), e["kind"] != "device_connected"))
    assert [(e["kind"], e["subject"], e["node_path"], e["detail"]["session_id"], e["detail"].get("close_code"))
            for e in events] == [(kind, "pw-1", "us/ca/site-pw-1", str(s["id"]), code) for s in reversed(listed)
                                 for kind, code in (("device_connected", None), ("device_disconnected", "1000"))]
    assert {e["detail"]["cert_serial"] for e in events} == {(cert / "serial").read_text()}
    assert len({e["event_id"] for e in events}) == 4
