"""The command-and-control store on the real PostgreSQL: upserts absorb at-least-once copies; `vpp dispatch show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from sinks.command_control import CommandControlSink, control_rows

T0 = 1_800_000_000_000
COMMAND = {"command_id": "c1", "node_path": "us/ca", "target_w": 5000.0, "start": T0, "end": T0 + 600_000,
           "issued_by": "test", "program": None, "received_at": T0}
STATUSES = [
    {"command_id": "c1", "node_path": "us/ca", "state": "accepted", "requested_w": 5000.0, "allocated_w": 5000.0,
     "shortfall_w": 0.0, "devices": 2, "at": T0, "reason": None},
    {"command_id": "c1", "node_path": "us/ca", "state": "reallocated", "requested_w": 5000.0, "allocated_w": 4000.0,
     "shortfall_w": 1000.0, "devices": 1, "at": T0 + 70_000, "reason": "1 device(s) left or went stale, 0 taken, 0 joined"},
]
SETPOINTS = [
    {"command_id": "c1", "device_id": "d1", "node_path": "us/ca", "setpoint_w": 2500.0, "start": T0, "end": T0 + 600_000},
    {"command_id": "c1", "device_id": "d2", "node_path": "us/ca", "setpoint_w": 2500.0, "start": T0, "end": T0 + 600_000},
    {"command_id": "c1", "device_id": "d1", "node_path": "us/ca", "setpoint_w": 0.0, "start": T0 + 70_000, "end": T0 + 600_000},
    {"command_id": "c1", "device_id": "d2", "node_path": "us/ca", "setpoint_w": 4000.0, "start": T0 + 70_000, "end": T0 + 600_000},
]
ITEMS = [("command", COMMAND)] + [("status", s) for s in STATUSES] + [("setpoint", s) for s in SETPOINTS]


def test_rows_fold_copies_within_a_batch():
    cols = control_rows(ITEMS + ITEMS)
    assert len(cols["command"][0]) == 1 and len(cols["status"][0]) == 2 and len(cols["setpoint"][0]) == 4


def _write(dsn: str, items) -> None:
    part = CommandControlSink(dsn).build("store", 0, 1)
    try:
        part.write_batch(items)
    finally:
        part.close()


_COLUMNS = {  # every column but stored_at (when the row was last written)
    "dispatch_commands": "command_id, node_path, target_w, start_at, end_at, issued_by, program, received_at",
    "device_setpoints": "command_id, device_id, start_at, end_at, node_path, setpoint_w",
    "dispatch_statuses": "command_id, at, state, node_path, requested_w, allocated_w, shortfall_w, devices, reason",
}


def _tables(dsn: str) -> dict[str, list]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2, 3").fetchall()  # noqa: S608 - fixed names
                for t, cols in _COLUMNS.items()}


def test_replayed_writes_leave_the_same_rows(isolated_settings):
    dsn = isolated_settings.postgres_dsn
    _write(dsn, ITEMS)
    once = _tables(dsn)
    assert [len(v) for v in once.values()] == [1, 4, 2]
    _write(dsn, ITEMS[2:] + ITEMS)  # an at-least-once restart re-produces a tail, then everything
    assert _tables(dsn) == once


def test_vpp_dispatch_show(isolated_settings):
    dsn = isolated_settings.postgres_dsn
    _write(dsn, ITEMS)
    env = {**os.environ, "VPP_POSTGRES_DSN": dsn}
    shown = subprocess.run([sys.executable, "-m", "cli", "dispatch", "show", "c1", "--json"], env=env,
                           capture_output=True, text=True, check=True)
    doc = json.loads(shown.stdout)
    assert doc["command"]["node_path"] == "us/ca"
    assert [s["state"] for s in doc["statuses"]] == ["accepted", "reallocated"]
    assert {p["device_id"]: p["setpoint_w"] for p in doc["latest_setpoints"]} == {"d1": 0.0, "d2": 4000.0}
    missing = subprocess.run([sys.executable, "-m", "cli", "dispatch", "show", "nope"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no dispatch command 'nope'" in missing.stderr


def test_a_rejected_command_with_an_end_no_timestamp_holds_is_kept_and_shown_with_why(isolated_settings):
    """`vpp dispatch send --minutes 1e12` ends in the year 1,903,351: writing it once stopped the flow for good."""
    dsn = isolated_settings.postgres_dsn
    command = {**COMMAND, "command_id": "c-far", "end": 60_001_796_608_090_183}
    rejected = {**STATUSES[0], "command_id": "c-far", "state": "rejected", "allocated_w": 0.0, "devices": 0,
                "reason": "invalid period: from 1800000000000 to 60001796608090183 is ... longer than the 168 h ..."}
    _write(dsn, [("command", command), ("status", rejected)])
    env = {**os.environ, "VPP_POSTGRES_DSN": dsn}
    shown = subprocess.run([sys.executable, "-m", "cli", "dispatch", "show", "c-far", "--json"], env=env,
                           capture_output=True, text=True, check=True)
    doc = json.loads(shown.stdout)
    assert doc["command"]["end_at"] is None and doc["command"]["start_at"].startswith("2027-01-15")
    assert [(s["state"], s["reason"][:40]) for s in doc["statuses"]] == [("rejected", rejected["reason"][:40])]
    table = subprocess.run([sys.executable, "-m", "cli", "dispatch", "show", "c-far"], env={**env, "COLUMNS": "240"},
                           capture_output=True, text=True, check=True)
    assert "no representable time: see the status" in table.stdout and "rejected" in table.stdout


def test_vpp_dispatch_send_refuses_a_period_longer_than_a_command_may_cover():
    sent = subprocess.run([sys.executable, "-m", "cli", "dispatch", "send", "us/ca", "--watts", "1000",
                           "--minutes", "1e12"], capture_output=True, text=True, timeout=60)
    assert sent.returncode != 0 and "Traceback" not in sent.stderr
    assert "--minutes 1e+12 is longer than the 10,080 minutes (7 days)" in sent.stderr


def test_vpp_dispatch_send_says_the_flow_decides_and_warns_of_a_node_without_devices(isolated_settings, tmp_path):
    env = {**os.environ, "VPP_BROKER": isolated_settings.broker, "VPP_POSTGRES_DSN": isolated_settings.postgres_dsn,
           "VPP_SCHEMA_REGISTRY_URL": isolated_settings.schema_registry_url,
           "VPP_STATE_DIR": isolated_settings.state_dir,  # the stack's credentials (stack.json names their files)
           "VPP_TOPIC_PREFIX": isolated_settings.topic_prefix}
    sent = subprocess.run([sys.executable, "-m", "cli", "dispatch", "send", "us/nowhere", "--watts", "1000",
                           "--minutes", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    command = json.loads(sent.stdout)
    assert f"vpp dispatch show {command['command_id']}" in sent.stderr
    assert "warning: no registered device lies under 'us/nowhere'" in sent.stderr
    (tmp_path / "assets.csv").write_text("device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,"
                                         "max_discharge_w,reserve_pct\npw-000123,site-0042,us/ca/pge/94110/site-0042,"
                                         "America/Los_Angeles,13500,5000,5000,20\n")
    subprocess.run([sys.executable, "-m", "cli", "assets", "import", str(tmp_path / "assets.csv")], env=env,
                   check=True, capture_output=True, timeout=60)
    known = subprocess.run([sys.executable, "-m", "cli", "dispatch", "send", "us/ca", "--watts", "1000",
                            "--minutes", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert known.returncode == 0 and "warning" not in known.stderr, known.stderr
