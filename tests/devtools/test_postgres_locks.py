"""The local PostgreSQL's locks, on the real server: SCRAM passwords, one role per component, fsync on.

A flow's role (vpp_flow) reads and writes the rows of the flow tables and nothing more: no DDL, no
writes to the asset registry, nothing of the schema registry's. A client without the password, or with
a wrong one, is refused, and nothing it prints shows a password.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools import pg_local

REPO = Path(__file__).resolve().parents[2]


def _role_dsn(stack, role: str) -> str:
    return make_conninfo(stack.postgres_dsn, user=role)


def _password_of(stack, role: str) -> str:
    return pg_local.passwords(Path(stack.state_dir))[role]


@pytest.mark.parametrize("statement", [
    "DROP TABLE node_state",
    "ALTER TABLE dispatch_commands ADD COLUMN x int",
    "TRUNCATE telemetry_dlq",
    "CREATE TABLE flow_made (x int)",
    "INSERT INTO assets (device_id, site_id, region_path, timezone, capacity_wh, max_charge_w, max_discharge_w,"
    " reserve_pct) VALUES ('d', 's', 'us', 'UTC', 1, 1, 1, 1)",
    "DELETE FROM dispatch_statuses",
    "SELECT * FROM schema_migrations",
])
def test_a_flows_role_is_refused_ddl_and_tables_it_does_not_need(stack, statement: str) -> None:
    with psycopg.connect(_role_dsn(stack, "vpp_flow"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_a_flows_role_reads_assets_and_writes_its_own_tables(stack) -> None:
    with psycopg.connect(_role_dsn(stack, "vpp_flow")) as conn:
        conn.execute("SELECT count(*) FROM assets").fetchone()
        conn.execute("INSERT INTO telemetry_dlq (source_topic, source_partition, source_offset, reason, detail, raw)"
                     " VALUES ('t', 0, 0, 'r', 'd', '\\x00')")
        conn.execute("SELECT count(*) FROM node_state").fetchone()
        conn.rollback()  # leave nothing behind


def test_the_registrys_role_creates_its_own_tables_but_cannot_touch_the_flows(stack) -> None:
    with psycopg.connect(_role_dsn(stack, "vpp_registry")) as conn:
        conn.execute("CREATE TABLE registry_made (x int)")
        conn.execute("DROP TABLE registry_made")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM dispatch_commands")
        conn.rollback()


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_a_client_without_the_password_is_refused(stack, password, tmp_path) -> None:
    params = {k: v for k, v in conninfo_to_dict(stack.postgres_dsn).items() if k != "passfile"}
    params["passfile"] = str(tmp_path / "none")  # not the user's ~/.pgpass either
    if password:
        params["password"] = password
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(make_conninfo(**params), connect_timeout=5)


def test_the_server_authenticates_every_connection_syncs_to_disk_and_hides_its_socket(stack) -> None:
    with psycopg.connect(stack.postgres_dsn) as conn:
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"
        hba = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
        sockets = conn.execute("SHOW unix_socket_directories").fetchone()[0]
    assert hba == [("scram-sha-256",)]
    assert stat.S_IMODE(os.stat(sockets).st_mode) == 0o700
    passfile = Path(conninfo_to_dict(stack.postgres_dsn)["passfile"])
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert _password_of(stack, "postgres") not in stack.postgres_dsn  # the DSN names the file, holds no secret


def test_failing_commands_never_print_a_password(stack, tmp_path) -> None:
    """A wrong password in the DSN, a stopped server's address, a registry URL with credentials: neither stdout,
    stderr nor the stack's logs show a password."""
    secret = "Sup3r-S3cret-pw"
    params = {k: v for k, v in conninfo_to_dict(stack.postgres_dsn).items() if k != "passfile"}
    bad_password = "postgresql://postgres:{}@{}:{}/vpp".format(secret, params["host"], params["port"])
    nowhere = f"postgresql://postgres:{secret}@127.0.0.1:1/vpp"
    dsn_file = tmp_path / "dsn"
    outputs = []
    for dsn in (bad_password, nowhere):
        dsn_file.write_text(dsn)
        for argv in (["assets", "list"], ["dlq", "list"], ["tree"]):
            env = {**os.environ, "PYTHONPATH": str(REPO), "VPP_STATE_DIR": str(tmp_path),
                   "VPP_POSTGRES_DSN_FILE": str(dsn_file), "PGPASSFILE": str(tmp_path / "none")}
            result = subprocess.run([sys.executable, "-m", "cli", *argv], env=env, capture_output=True, text=True,
                                    timeout=60)
            assert result.returncode != 0, argv
            outputs.append(result.stdout + result.stderr)
    registry = subprocess.run([sys.executable, "-m", "cli", "schemas", "list"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO), "VPP_STATE_DIR": str(tmp_path),
                                   "VPP_SCHEMA_REGISTRY_URL": f"http://vpp-admin:{secret}@127.0.0.1:1"})
    assert registry.returncode != 0 and "http://vpp-admin:***@127.0.0.1:1" in registry.stderr
    outputs.append(registry.stdout + registry.stderr)
    ready = subprocess.run([sys.executable, "-c", "from devtools.registry.server import database_ready;"
                            "from devtools.registry.store import RegistryStore;"
                            f"print(database_ready(RegistryStore({bad_password!r})))"],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    outputs.append(ready.stdout + ready.stderr)
    assert "False" in ready.stdout
    log_files = [*(Path(stack.state_dir) / "logs").glob("*.log"), Path(stack.state_dir) / "postgres" / "log"]
    logs = [p.read_text(errors="replace") for p in log_files if p.exists()]
    for text in outputs + logs:
        assert secret not in text
        for role in ("postgres", "vpp_flow", "vpp_registry"):
            assert _password_of(stack, role) not in text
    assert any("***" in text or "password authentication failed" in text for text in outputs)


def test_every_flow_sink_and_reader_works_as_the_flows_role(isolated_settings) -> None:
    """The grants of 090_roles are enough: each PostgreSQL sink and reader the flows use, run as vpp_flow,
    twice (at-least-once replays take UPDATE)."""
    from sinks.asset_cache import AssetCache
    from sinks.autobidder_store import AutobidderStore
    from sinks.command_control import CommandControlSink
    from sinks.node_state import NODE_STATE_COLUMNS, NodeStateSink
    from sinks.postgres import DlqSink
    from vpp.assets import asset_from_row

    flow_dsn = make_conninfo(isolated_settings.postgres_dsn, user="vpp_flow")
    t0 = 1_800_000_000_000
    node = {c: 0 for c in NODE_STATE_COLUMNS} | {"node_path": "us", "window_start": t0, "window_end": t0 + 10_000}
    dead = {"source_topic": "telemetry.raw", "source_partition": 0, "source_offset": 7, "reason": "malformed_avro",
            "detail": "junk", "raw": b"\x00junk"}
    command = {"command_id": "c1", "node_path": "us/ca", "target_w": 5000.0, "start": t0, "end": t0 + 600_000,
               "issued_by": "test", "program": None, "received_at": t0}
    status = {"command_id": "c1", "node_path": "us/ca", "state": "accepted", "requested_w": 5000.0, "allocated_w": 5000.0,
              "shortfall_w": 0.0, "devices": 2, "at": t0, "reason": None}
    setpoint = {"command_id": "c1", "device_id": "d1", "node_path": "us/ca", "setpoint_w": 2500.0, "start": t0,
                "end": t0 + 600_000}
    bidder = [("fact", {"node_path": "us/ca", "interval_start": t0, "step": "fetched", "fact": {"n": 1}, "at": t0}),
              ("workflow", {"node_path": "us/ca", "interval_start": t0, "status": "forecasting", "bid_id": "b",
                            "reason": None, "at": t0})]
    for sink, batch in ((NodeStateSink(flow_dsn), [node]), (DlqSink(flow_dsn), [dead]),
                        (CommandControlSink(flow_dsn), [("command", command), ("status", status), ("setpoint", setpoint)]),
                        (AutobidderStore(flow_dsn), bidder)):
        part = sink.build("store", 0, 1)
        try:
            part.write_batch(batch)
            part.write_batch(batch)
        finally:
            part.close()
    assert AssetCache(flow_dsn, asset_from_row, refresh_s=5.0).refresh() == 0
    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                  for t in ("node_state", "telemetry_dlq", "dispatch_commands", "autobidder_workflows")]
    assert counts == [1, 1, 1, 1]
