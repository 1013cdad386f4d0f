"""The dispatch flow over a dump: `vpp replay dispatch` is deterministic and keeps the spec's rules,
and the same dataflow gives the same set points on 1 worker and on a 2-worker cluster."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows._common.registries import static_assets
from sinks.ports import MemoryPorts
from flows.dispatch.flow import build_flow
from sinks.dumps import dump_line
from vpp.config import Settings
from cli.replay import replay
from vpp.serde import Serde

VPP = [sys.executable, "-m", "cli"]
MIN = 60_000


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> tuple[list[dict], Path]:
    """Canonical readings of a 40-device fleet over 15 minutes (simulated, then canonicalized), by time."""
    d = tmp_path_factory.mktemp("dispatch")
    subprocess.run(VPP + ["simulate", "--devices", "40", "--duration", "900", "--seed", "3", "--no-faults",
                          "--dump", str(d / "raw.jsonl"), "--assets-out", str(d / "assets.csv")], check=True, capture_output=True)
    subprocess.run(VPP + ["replay", "canonicalize", "--input", str(d / "raw.jsonl"), "--assets", str(d / "assets.csv"),
                          "--out", str(d / "canon")], check=True, capture_output=True)
    records = [orjson.loads(line)["value"] for line in open(d / "canon" / "telemetry.canonical.jsonl", "rb")]
    records.sort(key=lambda r: (r["ts"], r["device_id"]))
    return records, d / "assets.csv"


def commands(t0: int) -> list[dict]:
    return [
        {"command_id": "c-us", "node_path": "us", "target_w": 60000.0, "start": t0 + 2 * MIN, "end": t0 + 10 * MIN, "issued_by": "t"},
        {"command_id": "c-ca", "node_path": "us/ca", "target_w": -5000.0, "start": t0 + 3 * MIN, "end": t0 + 6 * MIN, "issued_by": "t"},
        {"command_id": "c-unknown", "node_path": "us/zz", "target_w": 1000.0, "start": t0 + 3 * MIN, "end": t0 + 6 * MIN, "issued_by": "t"},
        {"command_id": "c-backwards", "node_path": "us", "target_w": 1000.0, "start": t0 + 4 * MIN, "end": t0 + 3 * MIN, "issued_by": "t"},
        {"command_id": "c-us-2", "node_path": "us", "target_w": 20000.0, "start": t0 + 8 * MIN, "end": t0 + 20 * MIN, "issued_by": "t"},
    ]


def mixed_dump(readings: list[dict], cmds: list[dict], path: Path, *, drop_after: dict[str, int] | None = None) -> Path:
    """kcat lines of readings in time order, each command just before the first reading at or after its start."""
    drop_after = drop_after or {}
    pending = sorted(cmds, key=lambda c: c["start"])
    with open(path, "wb") as fh:
        for offset, r in enumerate(readings):
            while pending and pending[0]["start"] <= r["ts"]:
                c = pending.pop(0)
                fh.write(dump_line("dispatch.commands", 0, 0, c["start"], c["node_path"], orjson.dumps(c).decode()))
            if r["ts"] > drop_after.get(r["device_id"], r["ts"]):
                continue  # this device fell silent
            fh.write(dump_line("telemetry.canonical", 0, offset, r["ts"], r["device_id"], orjson.dumps(r).decode()))
    return path


def read_out(out: Path, topic: str) -> list[dict]:
    return [orjson.loads(line)["value"] for line in open(out / f"{topic}.jsonl", "rb")]


def test_replay_is_deterministic_and_follows_the_rules(canonical, tmp_path):
    readings, assets = canonical
    t0 = readings[0]["ts"]
    silent = {"pw-000000": t0 + 4 * MIN}  # one device goes quiet mid-command
    dump = mixed_dump(readings, commands(t0), tmp_path / "dump.jsonl", drop_after=silent)
    settings = Settings()
    replay(settings, "dispatch", dump, assets, tmp_path / "a")
    replay(settings, "dispatch", dump, assets, tmp_path / "b")
    for name in ("device.commands.jsonl", "dispatch.status.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    statuses = read_out(tmp_path / "a", "dispatch.status")
    by_command = defaultdict(list)
    for s in statuses:
        by_command[s["command_id"]].append(s)
    assert [s["state"] for s in by_command["c-unknown"]] == ["rejected"]
    assert "unknown node" in by_command["c-unknown"][0]["reason"]
    assert [s["state"] for s in by_command["c-backwards"]] == ["rejected"]
    assert by_command["c-ca"][0]["state"] == "accepted" and by_command["c-ca"][-1]["state"] == "expired"
    us_states = [s["state"] for s in by_command["c-us"]]
    assert us_states[0] == "accepted" and us_states[-1] == "superseded" and "reallocated" in us_states
    assert by_command["c-us-2"][0]["state"] == "accepted"
    # the silent device's share moved to the others within staleness + one window
    stale = [s for s in by_command["c-us"] if s["state"] == "reallocated" and "went stale" in s["reason"]
             and not s["reason"].startswith("0 ")]
    assert stale and stale[0]["at"] <= silent["pw-000000"] + 60_000 + 10_000 + 5_000

    # replaying the set points: at every status, the devices' live set points sum to the allocation
    live: dict[str, tuple[str, float]] = {}
    setpoints = read_out(tmp_path / "a", "device.commands")
    for sp in setpoints:
        if sp["setpoint_w"] == 0:
            live.pop(sp["device_id"], None)
        else:
            live[sp["device_id"]] = (sp["command_id"], sp["setpoint_w"])
    assert {c for c, _ in live.values()} <= {"c-us-2"}
    assert sum(w for _, w in live.values()) == pytest.approx(by_command["c-us-2"][-1]["allocated_w"], abs=1.0)
    assert all(sp["device_id"] != "pw-000000" or sp["start"] <= silent["pw-000000"] + 80_000 for sp in setpoints
               if sp["setpoint_w"] != 0)


def source_messages(readings: list[dict], cmds: list[dict], serde: Serde) -> list[KafkaSourceMessage]:
    """Avro messages of both topics, each command just before the first reading at or after its start."""
    msgs, pending = [], sorted(cmds, key=lambda c: c["start"])
    for offset, r in enumerate(readings):
        while pending and pending[0]["start"] <= r["ts"]:
            c = pending.pop(0)
            msgs.append(KafkaSourceMessage(c["node_path"].encode(), serde.encode("dispatch.commands", c), "dispatch.commands",
                                           partition=0, offset=0))
        msgs.append(KafkaSourceMessage(r["device_id"].encode(), serde.encode("telemetry.canonical", r), "telemetry.canonical",
                                       partition=0, offset=offset))
    return msgs


def test_one_worker_and_a_two_worker_cluster_agree(canonical):
    readings, assets = canonical
    t0 = readings[0]["ts"]
    serde = Serde.local()
    msgs = source_messages(readings, commands(t0), serde)

    def run(runner) -> list:
        out: list = []
        flow = build_flow(Settings(), ports=MemoryPorts(msgs, batch_size=50, sink=lambda: TestingSink(out)), assets=static_assets(assets), store=None, wall_clock=None)
        runner(flow)
        return sorted((m.topic, m.key, orjson.dumps(serde.decode(m.value), option=orjson.OPT_SORT_KEYS)) for m in out)

    single = run(run_main)
    assert len(single) > 100
    assert run(lambda f: cluster_main(f, [], 0, worker_count_per_proc=2)) == single


def test_restart_mid_command_resumes_from_the_snapshot(canonical, tmp_path):
    """Stopped mid-command and resumed from its recovery store, the flow goes on as if never stopped."""
    readings, assets = canonical
    t0 = readings[0]["ts"]
    serde = Serde.local()
    msgs = source_messages(readings, commands(t0), serde)
    cut = next(i for i, m in enumerate(msgs) if m.topic == "telemetry.canonical" and serde.decode(m.value)["ts"] > t0 + 5 * MIN)

    def run(source_items, recovery=None) -> list:
        out: list = []
        flow = build_flow(Settings(), ports=MemoryPorts(source_items, batch_size=50, sink=lambda: TestingSink(out)), assets=static_assets(assets), store=None,
                          wall_clock=None)
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
        return [(m.topic, m.key, serde.decode(m.value)) for m in out]

    whole = run(msgs)
    (tmp_path / "rec").mkdir()
    init_db_dir(tmp_path / "rec", 1)
    recovery = RecoveryConfig(str(tmp_path / "rec"))
    items = msgs[:cut] + [TestingSource.EOF()] + msgs[cut:]
    first = run(items, recovery)
    second = run(items, recovery)
    assert first + second == whole
