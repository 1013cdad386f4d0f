"""The ``alerts`` dataflow end to end in memory: Avro in, fleet.alerts + fleet.events out.

A device that stops reporting and comes back gives one device_offline alert (firing, resolved);
dispatch statuses become command events; a message that cannot be decoded becomes a dead letter;
the same input on a 2-worker cluster, and stopped and resumed from its recovery store, gives the
same records.
"""

from __future__ import annotations

import pickle
from datetime import timedelta

import bytewax.operators as op
import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.alerts.flow import build_flow, device_gone, dlq_dialect
from vpp.config import Settings
from vpp.serde import Serde, to_json_value

SERDE = Serde.local()
T0 = 1_767_225_600_000
S = 1000
SITE = "us/ca/pge"


class MemoryPorts:
    def __init__(self, items: list, written: list):
        self.serde = SERDE
        self.items, self.written = items, written

    def topic(self, name: str) -> str:
        return name

    def read(self, flow, step_id, topics):
        return op.input(step_id, flow, TestingSource(self.items, batch_size=20))

    def write(self, step_id, stream) -> None:
        op.output(step_id, stream, TestingSink(self.written))


def reading(device: str, t_s: int) -> dict:
    return {"device_id": device, "site_id": "s1", "region_path": SITE, "ts": T0 + t_s * S, "dialect": "sonnen/2",
            "soc_pct": 50.0, "battery_w": 0.0, "solar_w": 0.0, "load_w": 0.0, "grid_w": 0.0, "grid_connected": True,
            "capacity_wh": 10_000.0, "flags": []}


def status(state: str, t_s: int) -> dict:
    return {"command_id": "c1", "node_path": "us/ca", "state": state, "requested_w": 5000.0, "allocated_w": 5000.0,
            "shortfall_w": 0.0, "devices": 3, "at": T0 + t_s * S, "reason": None}


def messages() -> list[KafkaSourceMessage]:
    """Three devices over 10 minutes; d1 silent from 200 s to 400 s; a command; one undecodable message."""
    records = []
    for t in range(0, 600, 5):
        for device in ("d0", "d1", "d2"):
            if device == "d1" and 200 <= t < 400:
                continue
            records.append(("telemetry.canonical", device, reading(device, t)))
        if t == 100:
            records.append(("dispatch.status", "c1", status("accepted", t)))
        if t == 300:
            records.append(("dispatch.status", "c1", status("expired", t)))
    msgs = [KafkaSourceMessage(key.encode(), SERDE.encode(topic, rec), topic, partition=0, offset=i)
            for i, (topic, key, rec) in enumerate(records)]
    msgs.insert(50, KafkaSourceMessage(b"d9", b"\x00garbage", "telemetry.canonical", partition=0, offset=10_000))
    return msgs


def run(items: list, runner=run_main, **kw) -> list[tuple[str, dict]]:
    written: list = []
    runner(build_flow(Settings(), ports=MemoryPorts(items, written)), **kw)
    return [(m.topic, SERDE.decode(m.value)) for m in written]


def test_a_silent_device_fires_device_offline_once_and_resolves_when_it_reports_again() -> None:
    out = run(messages())
    alerts = [(r["rule"], r["subject"], r["state"]) for topic, r in out if topic == "fleet.alerts"]
    assert alerts == [("device_offline", "d1", "firing"), ("device_offline", "d1", "resolved")]
    kinds = [r["kind"] for topic, r in out if topic == "fleet.events"]
    assert sorted(kinds) == ["alert_firing", "alert_resolved", "command_accepted", "command_expired"]
    dead = [r for topic, r in out if topic == "telemetry.dlq"]
    # b"\x00garbage": the wire format's magic byte, then "garb" read as a schema id nobody registered
    assert len(dead) == 1 and dead[0]["reason"] == "unknown_schema" and dead[0]["source_offset"] == 10_000


def _canonical(out: list[tuple[str, dict]]) -> list[bytes]:
    return sorted(orjson.dumps([t, to_json_value(r)], option=orjson.OPT_SORT_KEYS) for t, r in out)


def test_one_worker_and_a_two_worker_cluster_agree() -> None:
    single = run(messages())
    assert _canonical(run(messages(), lambda f: cluster_main(f, [], 0, worker_count_per_proc=2))) == _canonical(single)


def test_stopped_and_resumed_from_its_recovery_store_it_repeats_and_loses_nothing(tmp_path) -> None:
    msgs = messages()
    whole = run(msgs)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    # stopped while d1's alert fires (it fired at 285 s): only the restored state can resolve it
    cut = next(i for i, m in enumerate(msgs) if m.topic == "telemetry.canonical" and m.offset < 10_000
               and SERDE.decode(m.value)["ts"] >= T0 + 330 * S)
    items = msgs[:cut] + [TestingSource.EOF()] + msgs[cut:]
    first = run(items, epoch_interval=timedelta(0), recovery_config=recovery)
    second = run(items, epoch_interval=timedelta(0), recovery_config=recovery)
    assert first + second == whole


def test_the_dialect_of_a_dead_letter_is_the_one_its_envelope_names() -> None:
    assert dlq_dialect(b'{"dialect": "sunspec/802", "device_id": "x"}') == "sunspec/802"
    assert dlq_dialect(b"not json") == "unknown"
    assert dlq_dialect(b'["a list"]') == "unknown"
    assert dlq_dialect(b'{"dialect": 7}') == "unknown"


class _BatchPorts(MemoryPorts):
    def __init__(self, items: list, written: list, batch_size: int):
        super().__init__(items, written)
        self.batch_size = batch_size

    def read(self, flow, step_id, topics):
        return op.input(step_id, flow, TestingSource(self.items, batch_size=self.batch_size))


def test_the_records_do_not_depend_on_the_input_batch_size() -> None:
    def run_with(batch_size: int) -> dict[str, list[bytes]]:
        """Each topic's records: alerts in order; events sorted (command events and alert events are two
        streams merged in an order that follows the batches)."""
        written: list = []
        run_main(build_flow(Settings(), ports=_BatchPorts(messages(), written, batch_size)))
        out: dict[str, list[bytes]] = {}
        for m in written:
            out.setdefault(m.topic, []).append(orjson.dumps(to_json_value(SERDE.decode(m.value)), option=orjson.OPT_SORT_KEYS))
        out["fleet.events"].sort()
        return out

    reference = run_with(20)
    assert len(reference["fleet.alerts"]) == 2 and len(reference["fleet.events"]) == 4
    for size in (1, 7, 1000):
        assert run_with(size) == reference, size


def test_a_resumed_state_judges_no_silence_for_one_offline_period_of_wall_time() -> None:
    from flows.alerts.flow import AlertLogic
    from flows.alerts.logic import RuleConfig
    from flows.alerts.state import AlertState

    cfg = RuleConfig()
    state = AlertState(cfg)
    state.step([("r", T0, "d1", SITE, 50.0, True), ("r", T0, "d2", SITE, 50.0, True), ("c", T0, "w")])
    wall = [1000.0]
    logic = AlertLogic(pickle.dumps(state), cfg=cfg, wall_clock=lambda: wall[0])
    d2 = [[("r", T0 + t * S, "d2", SITE, 50.0, True), ("c", T0 + t * S, "w")] for t in range(5, 400, 5)]
    emitted, _ = logic.on_batch(d2[:60])  # 300 s of event time, d1 silent, in 10 s of wall time
    assert emitted == []
    wall[0] += cfg.offline_ms / 1000  # the wait is over
    emitted, _ = logic.on_batch(d2[60:])
    alerts = [a for e in emitted for a in e.alerts]
    assert [(a["subject"], a["state"]) for a in alerts] == [("d1", "firing")]
    assert alerts[0]["started_at"] == T0 + 90 * S  # the same alert as without the restart, only later


@pytest.mark.parametrize("event,gone", [
    ({"kind": "device_removed", "subject": "d1", "node_path": "us/ca/pge", "at": 5, "detail": {}},
     ("us", ("x", 5, "d1", "device d1: removed from the registry"))),
    ({"kind": "device_moved", "subject": "d1", "node_path": "mx/bc", "at": 5, "detail": {"from_node_path": "us/ca/pge"}},
     ("us", ("x", 5, "d1", "device d1: moved to mx/bc"))),
    ({"kind": "device_moved", "subject": "d1", "node_path": "us/ny", "at": 5, "detail": {"from_node_path": "us/ca/pge"}},
     None),  # the same tree: its next reading carries its new path
    ({"kind": "device_removed", "subject": "d1", "node_path": "", "at": 5, "detail": {}}, None),
    ({"kind": "alert_firing", "subject": "a1", "node_path": "us/ca", "at": 5, "detail": {}}, None),
    ({"kind": "device_registered", "subject": "d1", "node_path": "us/ca", "at": 5, "detail": {}}, None),
])
def test_only_a_removal_or_a_move_to_another_tree_takes_a_device_out_of_a_trees_state(event, gone) -> None:
    assert device_gone(event) == gone
