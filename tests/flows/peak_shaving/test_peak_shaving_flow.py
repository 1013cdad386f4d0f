"""The peak-shaving dataflow: Avro aggregates of nodes with thresholds in, Avro dispatch commands out."""

from __future__ import annotations

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, run_main

from flows.peak_shaving.flow import build_flow
from flows.peak_shaving.logic import PROGRAM, ShavingConfig
from sinks.ports import MemoryPorts
from vpp.config import Settings
from vpp.errors import UserError
from vpp.serde import Serde

T0 = 1_782_000_000_000


def _aggregate(node: str, window: int, grid_w: float) -> dict:
    start = T0 + window * 10_000
    return {"node_path": node, "depth": node.count("/") + 1, "window_start": start, "window_end": start + 10_000,
            "devices_known": 10, "devices_reporting": 10, "estimated_devices": 0, "battery_w": 0.0, "solar_w": 0.0,
            "load_w": grid_w, "grid_w": grid_w, "energy_available_wh": 50_000.0, "headroom_wh": 50_000.0,
            "discharge_available_w": 40_000.0, "charge_available_w": 40_000.0}


def test_commands_for_nodes_with_a_threshold_only():
    serde = Serde.local()
    records = [_aggregate("us/ca", 0, 90_000), _aggregate("us/tx", 0, 500_000), _aggregate("us/ca", 1, 130_000),
               _aggregate("us/ca", 2, 70_000),  # 100 kW underneath: the command settles (30 s), nothing changes
               _aggregate("us/ca", 5, 60_000)]  # with 30 kW shaved: 90 kW underneath
    msgs = [KafkaSourceMessage(r["node_path"].encode(), serde.encode("fleet.aggregates", r), "fleet.aggregates", partition=0, offset=i)
            for i, r in enumerate(records)]
    msgs.append(KafkaSourceMessage(b"x", b"not avro", "fleet.aggregates", partition=0, offset=99))
    out: list = []
    run_main(build_flow(Settings(), ports=MemoryPorts(msgs, batch_size=1, sink=lambda: TestingSink(out)), thresholds={"us/ca": ShavingConfig(threshold_w=100_000)}))
    commands = [serde.decode(m.value) for m in out if m.topic == "dispatch.commands"]
    assert [(c["node_path"], c["target_w"]) for c in commands] == [("us/ca", 30_000.0), ("us/ca", 0.0)]
    assert all(c["program"] == PROGRAM and c["issued_by"] == "peak-shaving" for c in commands)
    assert [m.topic for m in out].count("telemetry.dlq") == 1


def test_without_thresholds_the_flow_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.delenv("VPP_CONFIG", raising=False)
    with pytest.raises(UserError, match="no settings file"):
        build_flow(Settings(), ports=MemoryPorts([], batch_size=1, sink=lambda: TestingSink([])))
    empty = tmp_path / "vpp.toml"
    empty.write_text('broker = "127.0.0.1:9092"\n')
    monkeypatch.setenv("VPP_CONFIG", str(empty))
    with pytest.raises(UserError, match=r"peak_shaving.nodes"):
        build_flow(Settings(), ports=MemoryPorts([], batch_size=1, sink=lambda: TestingSink([])))


def test_thresholds_come_from_the_settings_file_given_with_config(tmp_path, monkeypatch):
    """``vpp run peak-shaving --config FILE``: Settings.load remembers the file and the flow reads its tables."""
    monkeypatch.delenv("VPP_CONFIG", raising=False)
    config = tmp_path / "shaving.toml"
    config.write_text('[peak_shaving.nodes."us/ca"]\nthreshold_w = 100000\n')
    settings = Settings.load(state_dir=tmp_path, config_file=config, environ={})
    assert settings.config_file == str(config)
    out: list = []
    serde = Serde.local()
    record = _aggregate("us/ca", 0, 130_000)
    msgs = [KafkaSourceMessage(b"us/ca", serde.encode("fleet.aggregates", record), "fleet.aggregates", partition=0,
                               offset=0)]
    run_main(build_flow(settings, ports=MemoryPorts(msgs, batch_size=1, sink=lambda: TestingSink(out))))
    commands = [serde.decode(m.value) for m in out if m.topic == "dispatch.commands"]
    assert [(c["node_path"], c["target_w"]) for c in commands] == [("us/ca", 30_000.0)]
