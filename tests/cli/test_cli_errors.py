"""Bad input and a stopped stack: one line ``vpp: error: ...``, exit 1 or 2, no traceback, nothing reported as done.

Each case runs the real ``vpp`` command in a subprocess. "Stopped" services are
loopback ports nothing listens on; the query errors that must NOT be taken for
a stopped service come from the real PostgreSQL of the test stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VPP = [sys.executable, "-m", "cli"]


def vpp(*args: str, env: dict[str, str] | None = None, state_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``vpp ARGS`` with only the given ``VPP_*`` variables (none inherited) and its own state directory."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VPP_", "BYTEWAX_"))}
    clean.update({"VPP_STATE_DIR": str(state_dir), **(env or {})})
    return subprocess.run(VPP + list(args), capture_output=True, text=True, env=clean, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The single stderr line of a command that failed cleanly with ``code`` and printed nothing on stdout."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vpp: error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def usage_error(result: subprocess.CompletedProcess) -> str:
    """argparse's refusal of an option value: exit 2, its usage, one error line, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    return result.stderr.strip().splitlines()[-1]


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("window_s = [\n", "config file .* is not valid TOML"),
    ("unknown_key = 5\n", "unknown setting 'unknown_key'"),
    ("window_s = -5\n", "setting 'window_s' = -5 must be more than 0 s"),
])
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, text, message):
    import re

    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    line = one_line_error(vpp("status", "--config", str(toml), state_dir=tmp_path), code=2)
    assert re.search(message, line), line


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path):
    line = one_line_error(vpp("status", "--config", str(tmp_path / "nope.toml"), state_dir=tmp_path), code=2)
    assert line == f"vpp: error: cannot read config file {tmp_path / 'nope.toml'}: No such file or directory"


@pytest.mark.parametrize("variable, value, message", [
    ("VPP_WINDOW_S", "abc", "setting 'window_s' = 'abc' is not an integer"),
    ("VPP_WINDOW_S", "0", "setting 'window_s' = 0 must be more than 0 s"),
    ("VPP_LATENESS_S", "-100", "setting 'lateness_s' = -100 must be 0 s or more"),
])
def test_a_bad_environment_variable_is_one_line_and_exit_2(tmp_path, variable, value, message):
    line = one_line_error(vpp("status", env={variable: value}, state_dir=tmp_path), code=2)
    assert line == f"vpp: error: {message}"


def test_a_negative_window_is_refused_before_a_replay_writes_anything(tmp_path):
    dump = tmp_path / "raw.jsonl"
    made = vpp("simulate", "--devices", "5", "--duration", "20", "--dump", str(dump), state_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    result = vpp("replay", "pipeline", "--input", str(dump), "--assets", str(tmp_path / "raw.assets.csv"),
                 "--out", str(out), env={"VPP_WINDOW_S": "-5"}, state_dir=tmp_path)
    assert "setting 'window_s' = -5 must be more than 0 s" in one_line_error(result, code=2)
    assert not out.exists()


# -- a stopped stack -----------------------------------------------------------------------------


@pytest.fixture
def stopped(tmp_path) -> dict[str, str]:
    """Settings pointing every service at a loopback port nothing listens on."""
    from vpp.net import free_ports

    port = free_ports(1)[0]
    return {"VPP_BROKER": f"127.0.0.1:{port}", "VPP_POSTGRES_DSN": f"postgresql://postgres:s3cret@127.0.0.1:{port}/vpp",
            "VPP_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}"}


@pytest.fixture
def small_dump(tmp_path) -> Path:
    dump = tmp_path / "raw.jsonl"
    made = vpp("simulate", "--devices", "5", "--duration", "10", "--dump", str(dump), state_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    return dump


@pytest.mark.parametrize("args, service", [
    (["schemas", "list"], "the schema registry at http://127.0.0.1:{port}"),
    (["schemas", "register"], "the schema registry at http://127.0.0.1:{port}"),
    (["dispatch", "send", "us/ca", "--watts", "1000", "--minutes", "5"], "the schema registry at http://127.0.0.1:{port}"),
    (["dlq", "list"], "PostgreSQL at postgresql://postgres:***@127.0.0.1:{port}/vpp"),
    (["dlq", "show", "1"], "PostgreSQL at postgresql://postgres:***@127.0.0.1:{port}/vpp"),
    (["tree"], "PostgreSQL at postgresql://postgres:***@127.0.0.1:{port}/vpp"),
    (["dump", "telemetry.raw", "--out", "{tmp}/dumped.jsonl"], "the broker at 127.0.0.1:{port}"),
])
def test_a_command_on_a_stopped_stack_names_the_service_and_suggests_vpp_up(tmp_path, stopped, args, service):
    port = stopped["VPP_BROKER"].rsplit(":", 1)[1]
    result = vpp(*[a.format(tmp=tmp_path) for a in args], env=stopped, state_dir=tmp_path)
    line = one_line_error(result)
    assert line.startswith(f"vpp: error: cannot reach {service.format(port=port)} ("), line
    assert line.endswith(": is the stack up? (vpp up)"), line
    assert "s3cret" not in line
    assert not (tmp_path / "dumped.jsonl").exists()


def test_republishing_a_dump_to_a_stopped_broker_is_one_error_line(tmp_path, stopped, small_dump):
    result = vpp("replay", "canonicalize", "--input", str(small_dump), "--to-broker", env=stopped, state_dir=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [f"vpp: error: cannot reach the broker at {stopped['VPP_BROKER']} "
                                          "(Failed to get metadata: Local: Broker transport failure): is the stack up? "
                                          "(vpp up)"], "no librdkafka connection lines before it"
    assert "published" not in result.stdout


def test_only_failures_to_connect_count_as_a_stopped_service(stack):
    """A query the server refuses, a Kafka error other than transport, or any other error is not "cannot reach"."""
    import psycopg
    from confluent_kafka import KafkaError, KafkaException
    from psycopg.conninfo import make_conninfo

    from vpp.config import Settings
    from vpp.errors import service_unreachable

    settings = Settings.load(state_dir=stack.state_dir, environ={})
    with psycopg.connect(stack.postgres_dsn) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT * FROM no_such_table")
    assert service_unreachable(refused.value, settings) is None
    assert service_unreachable(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)), settings) is None
    assert service_unreachable(ValueError("connection failed: not psycopg"), settings) is None
    with pytest.raises(psycopg.OperationalError) as down:
        psycopg.connect(make_conninfo(stack.postgres_dsn, port=1), connect_timeout=5)
    assert "cannot reach PostgreSQL at" in str(service_unreachable(down.value, settings))


# -- option values -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["dlq", "list", "--limit", "-1"], "argument --limit: '-1' must be at least 1"),
    (["dlq", "list", "--limit", "0"], "argument --limit: '0' must be at least 1"),
    (["run", "canonicalize", "--workers", "-3"], "argument --workers: '-3' must be at least 1"),
    (["run", "canonicalize", "--workers", "0"], "argument --workers: '0' must be at least 1"),
    (["run", "canonicalize", "--processes", "0"], "argument --processes: '0' must be at least 1"),
])
def test_counts_below_one_are_refused(tmp_path, stopped, args, message):
    assert usage_error(vpp(*args, env=stopped, state_dir=tmp_path, timeout=60)).endswith(message)


def test_a_worker_count_from_the_environment_below_one_is_refused(tmp_path, stopped):
    result = vpp("run", "canonicalize", env={**stopped, "BYTEWAX_WORKERS_PER_PROCESS": "0"}, state_dir=tmp_path,
                 timeout=60)
    assert one_line_error(result) == "vpp: error: BYTEWAX_WORKERS_PER_PROCESS: '0' must be at least 1"


def test_dlq_list_limit_shows_that_many_of_the_newest(isolated_settings, tmp_path):
    import psycopg

    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        for offset in (1, 2, 3):
            conn.execute("INSERT INTO telemetry_dlq (source_topic, source_partition, source_offset, reason, detail, raw) "
                         "VALUES ('telemetry.raw', 0, %s, 'malformed_json', 'x', '\\x00')", (offset,))
    env = {"VPP_POSTGRES_DSN": isolated_settings.postgres_dsn, "COLUMNS": "200"}
    listed = vpp("dlq", "list", "--limit", "1", env=env, state_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "telemetry.raw[0]@3" in listed.stdout and "@2" not in listed.stdout and "@1" not in listed.stdout


# -- files ---------------------------------------------------------------------------------------

PLAN_ARGS = ["--capacity-wh", "1000", "--max-charge-w", "12000", "--max-discharge-w", "12000", "--soc-pct", "0",
             "--reserve-pct", "0", "--efficiency", "1", "--degradation-usd-per-mwh", "0"]
HEADER = "interval_start,price_usd_per_mwh\n"


def prices_csv(path: Path, prices: list[str], *, days: int = 0) -> Path:
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    rows = prices or [f"{30 + (i % 288) / 10:.2f}" for i in range(days * 288)]
    path.write_text(HEADER + "".join(f"{(start + timedelta(minutes=5 * i)).isoformat().replace('+00:00', 'Z')},{p}\n"
                                     for i, p in enumerate(rows)))
    return path


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("command", [["plan", *PLAN_ARGS], ["train", "--out", "model"]])
def test_a_binary_prices_file_is_one_line_naming_the_file(tmp_path, command):
    binary = tmp_path / "prices.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    line = one_line_error(vpp(*command, "--prices", str(binary), state_dir=tmp_path))
    assert line.startswith(f"vpp: error: {binary}: not a UTF-8 text file")


def test_a_prices_file_with_a_byte_order_mark_is_read(tmp_path):
    path = prices_csv(tmp_path / "prices.csv", ["10", "100"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = vpp("plan", "--prices", str(path), *PLAN_ARGS, state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["status"] == "optimal"


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_an_absurd_price_is_refused_and_a_million_is_not(tmp_path, solver):
    if solver == "highs":
        pytest.importorskip("highspy")
    absurd = prices_csv(tmp_path / "absurd.csv", ["10", "1e308"])
    line = one_line_error(vpp("plan", "--prices", str(absurd), *PLAN_ARGS, "--solver", solver, state_dir=tmp_path))
    assert line.startswith(f"vpp: error: {absurd}:3: price_usd_per_mwh '1e308' is beyond +-1,000,000 $/MWh")
    edge = prices_csv(tmp_path / "edge.csv", ["-1000000", "1000000"])
    result = vpp("plan", "--prices", str(edge), *PLAN_ARGS, "--solver", solver, state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["revenue_usd"] > 0


def test_a_plan_whose_numbers_overflow_is_an_error_not_infinity(tmp_path, monkeypatch, capsys):
    import models.optimize
    from cli.main import main

    import dataclasses

    real_plan = models.optimize.plan

    def overflowing(*args, **kwargs):
        return dataclasses.replace(real_plan(*args, **kwargs), revenue_usd=float("inf"))

    monkeypatch.setattr(models.optimize, "plan", overflowing)
    assert main(["plan", "--prices", str(prices_csv(tmp_path / "p.csv", ["10", "100"])), *PLAN_ARGS]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vpp: error: the plan's numbers are not finite") and captured.err.count("\n") == 1


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("model")
    history = prices_csv(tmp / "history.csv", [], days=2)
    from cli.main import main

    assert main(["train", "--prices", str(history), "--out", str(tmp / "model"), "--rounds", "2"]) == 0  # in-process
    return tmp / "model"


def test_forecasting_from_an_absurd_price_is_refused(tmp_path, model):
    history = prices_csv(tmp_path / "history.csv", [], days=2)
    history.write_text(history.read_text().replace(",30.00\n", ",1e308\n", 1))
    line = one_line_error(vpp("forecast", "--model", str(model), "--prices", str(history), state_dir=tmp_path))
    assert ":2: price_usd_per_mwh '1e308' is beyond +-1,000,000 $/MWh" in line


@pytest.mark.parametrize("garbage", [b"garbage, not a model", b"{", bytes(range(256)) * 4])
def test_a_corrupt_model_is_one_line_without_the_native_stack_trace(tmp_path, model, garbage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "booster.ubj").write_bytes(garbage)
    history = prices_csv(tmp_path / "history.csv", [], days=2)
    line = one_line_error(vpp("forecast", "--model", str(broken), "--prices", str(history), state_dir=tmp_path))
    assert line.startswith(f"vpp: error: cannot load the price model in {broken}: ")
    assert line.endswith("(retrain with vpp train)") and "[bt]" not in line and ".cc:" not in line


def test_training_into_a_path_that_cannot_be_written_is_one_line(tmp_path):
    history = prices_csv(tmp_path / "history.csv", [], days=2)
    (tmp_path / "file").write_text("")
    line = one_line_error(vpp("train", "--prices", str(history), "--out", str(tmp_path / "file" / "model"),
                              "--rounds", "2", state_dir=tmp_path))
    assert line.startswith(f"vpp: error: cannot write the model to {tmp_path / 'file' / 'model'}: ")


@pytest.mark.parametrize("where", ["/proc/nope/x.jsonl", "{tmp}/a-file/x.jsonl", "{tmp}"])
def test_a_dump_path_that_cannot_be_written_is_one_line(tmp_path, where):
    (tmp_path / "a-file").write_text("")
    result = vpp("simulate", "--devices", "5", "--duration", "10", "--dump", where.format(tmp=tmp_path),
                 state_dir=tmp_path)
    assert one_line_error(result).startswith("vpp: error: cannot write ")


def test_a_dump_into_missing_directories_creates_them(tmp_path):
    dump = tmp_path / "new" / "dir" / "raw.jsonl"
    result = vpp("simulate", "--devices", "5", "--duration", "10", "--dump", str(dump), state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert dump.stat().st_size > 0 and (tmp_path / "new" / "dir" / "raw.assets.csv").exists()
