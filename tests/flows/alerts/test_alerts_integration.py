"""The alerts flow on the real broker, killed mid-stream, then the store-alerts flow into PostgreSQL.

Canonical readings of 40 devices (30 under us/ca/pge, 10 under us/tx/oncor) are published in event
time, faster than real time, with a command's statuses. One device falls silent for 200 s and comes
back: device_offline fires once and resolves. Then every device under us/tx/oncor is islanded:
one grid_outage (on us/tx: us sees 25 %) and no device alert under it fires. ``vpp run alerts`` runs
with a recovery store; it is killed (SIGKILL) while the offline alert fires and restarted on the
rest: the restored state resolves it, every transition is on ``fleet.alerts`` (copies allowed:
at-least-once), none is lost, none is raised twice, and the store keeps one row per transition.

Also: a dispatch that cannot be met (dispatch.status and fleet.aggregates as the dispatch and aggregate
flows write them) fires dispatch_shortfall once and resolves when met; a device removed from the registry
(``device_removed`` on fleet.events) ends its alerts; and ``vpp replay alerts`` gives what the live run gave.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from cli.replay import dump_topic, replay
from real_services import VPP, VppProcesses, vpp_env, wait_for
from replay_compare import merge_by_timestamp
from sinks.kafka_tools import TopicCounter, read_topic
from vpp.serde import Serde
from vpp.kafka_security import client_config

S = 1000
CA, TX = "us/ca/pge", "us/tx/oncor"
DEVICES = [(f"ca-{i}", CA) for i in range(30)] + [(f"tx-{i}", TX) for i in range(10)]
SILENT = "ca-7"


def reading(device: str, site: str, ts: int, grid_connected: bool) -> dict:
    return {"device_id": device, "site_id": site.rsplit("/", 1)[-1], "region_path": site, "ts": ts,
            "dialect": "sonnen/2", "soc_pct": 60.0, "battery_w": 0.0, "solar_w": 0.0, "load_w": 500.0, "grid_w": 500.0,
            "grid_connected": grid_connected, "capacity_wh": 10_000.0, "flags": []}


def fleet(t0: int, start_s: int, end_s: int) -> list[dict]:
    """Readings every 5 s: SILENT says nothing from 200 s to 400 s; us/tx/oncor is off grid from 700 s."""
    out = []
    for t in range(start_s, end_s, 5):
        for device, site in DEVICES:
            if device == SILENT and 200 <= t < 400:
                continue
            out.append(reading(device, site, t0 + t * S, not (site == TX and t >= 700)))
    return out


def status(t0: int, state: str, t_s: int) -> dict:
    return {"command_id": "cmd-1", "node_path": "us/ca", "state": state, "requested_w": 1000.0, "allocated_w": 1000.0,
            "shortfall_w": 0.0, "devices": 30, "at": t0 + t_s * S, "reason": None}


class AlertsSeen:
    def __init__(self, settings, serde):
        self.counter = TopicCounter(settings, [settings.topic("fleet.alerts")], from_beginning=True)
        self.serde, self.records = serde, []

    def poll(self) -> list[dict]:
        self.records += [self.serde.decode(m.value()) for m in self.counter.poll(0.5)]
        return self.records

    def has(self, rule: str, subject: str, state: str) -> bool:
        return any((r["rule"], r["subject"], r["state"]) == (rule, subject, state) for r in self.poll())


@pytest.mark.timeout(600)
def test_offline_and_outage_alerts_survive_a_kill_and_are_stored_once(isolated_settings, tmp_path) -> None:
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    producer = Producer(client_config(settings))
    t0 = (int(time.time()) // 60 - 180) * 60 * S  # three hours ago, on a minute

    def publish(records: list[dict], topic: str = "telemetry.canonical", key: str = "device_id") -> None:
        name = settings.topic(topic)
        for r in records:
            producer.produce(name, serde.encode(name, r), r[key])
        producer.flush(30)

    env = vpp_env(settings, VPP_SNAPSHOT_INTERVAL_S="1")
    run = VPP + ["run", "alerts", "--recovery-dir", str(tmp_path / "recovery")]
    log = open(tmp_path / "flow.log", "ab")
    seen = AlertsSeen(settings, serde)
    flow = subprocess.Popen(run, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        publish([status(t0, "accepted", 100), status(t0, "expired", 300)], "dispatch.status", "command_id")
        first = fleet(t0, 0, 330)
        for i in range(0, len(first), 800):  # paced, so that snapshots are taken on the way
            publish(first[i:i + 800])
            time.sleep(0.3)
        wait_for(lambda: seen.has("device_offline", SILENT, "firing"), 120, "device_offline to fire")
        time.sleep(2)  # a snapshot or two after it
        flow.send_signal(signal.SIGKILL)  # while the alert fires: only the restored state can resolve it
        flow.wait(10)
        assert not seen.has("device_offline", SILENT, "resolved")
        publish(fleet(t0, 330, 1200))
        flow = subprocess.Popen(run, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: seen.has("device_offline", SILENT, "resolved"), 120, "device_offline to resolve after the restart")
        wait_for(lambda: seen.has("grid_outage", "us/tx", "firing"), 120, "grid_outage to fire after the restart")
        time.sleep(3)  # anything still in flight
    finally:
        flow.send_signal(signal.SIGKILL)
        flow.wait(10)
        seen.counter.close()
        log.close()

    got = read_topic(settings, settings.topic("fleet.alerts"), serde.decode)
    transitions = Counter((r["rule"], r["subject"], r["state"]) for r in got)
    assert {k for k in transitions if k[2] in ("firing", "resolved")} == {
        ("device_offline", SILENT, "firing"), ("device_offline", SILENT, "resolved"), ("grid_outage", "us/tx", "firing")}
    assert [k for k in transitions if k[0] == "grid_outage"] == [("grid_outage", "us/tx", "pending"),
                                                                 ("grid_outage", "us/tx", "firing")]
    device_under_tx = {k[2] for k in transitions if k[0] == "islanded"}
    assert device_under_tx <= {"pending", "dropped"}  # went pending before the node did, then dropped: none fired
    ids = {(r["alert_id"], r["state"]) for r in got}
    assert len(ids) == len(transitions), "one condition raised two alerts"
    print(f"fleet.alerts: {len(got)} records, {len(ids)} distinct transitions")

    from bytewax.testing import run_main

    from flows.store_alerts.flow import build_flow
    from sinks.ports import KafkaPorts

    run_main(build_flow(settings, ports=KafkaPorts(settings, tail=False)))
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone()[0] == len(ids)
        assert conn.execute("SELECT state FROM alerts WHERE rule = 'device_offline'").fetchall() == [("resolved",)]
        assert conn.execute("SELECT state FROM alerts WHERE rule = 'grid_outage'").fetchall() == [("firing",)]
        kinds = sorted(k for (k,) in conn.execute("SELECT kind FROM events"))
    assert kinds == ["alert_firing", "alert_firing", "alert_resolved", "command_accepted", "command_expired"]


def aggregate(node: str, t0: int, start_s: int, battery_w: float, window_s: int = 10) -> dict:
    return {"node_path": node, "depth": node.count("/") + 1, "window_start": t0 + start_s * S,
            "window_end": t0 + (start_s + window_s) * S, "devices_known": 20, "devices_reporting": 20,
            "estimated_devices": 0, "battery_w": battery_w, "solar_w": 0.0, "load_w": 0.0, "grid_w": 0.0,
            "energy_available_wh": 100_000.0, "headroom_wh": 100_000.0, "discharge_available_w": 100_000.0,
            "charge_available_w": 100_000.0, "capacity_wh": 200_000.0, "soc_pct": 50.0, "late": 0}


@pytest.mark.timeout(300)
def test_a_dispatch_that_cannot_be_met_fires_dispatch_shortfall_once_and_it_resolves_when_met(isolated_settings, tmp_path):
    """us/ny is dispatched 20 kW; its devices deliver nothing for 10 windows (one alert, not ten), then 19.5 kW
    (within max(5 %, 1 kW)): resolved after 2 windows."""
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    producer = Producer(client_config(settings))
    t0 = (int(time.time()) // 60 - 60) * 60 * S

    def publish(topic: str, key: str, records: list[dict]) -> None:
        name = settings.topic(topic)
        for r in records:
            producer.produce(name, serde.encode(name, r), r[key])
        producer.flush(30)

    command = {**status(t0, "accepted", 100), "command_id": "cmd-ny", "node_path": "us/ny", "requested_w": 20_000.0,
               "allocated_w": 20_000.0, "devices": 20}
    seen = AlertsSeen(settings, serde)
    events = TopicCounter(settings, [settings.topic("fleet.events")], from_beginning=True)
    kinds: list[str] = []
    with VppProcesses(vpp_env(settings), tmp_path / "flow.log") as procs:
        procs.start("run", "alerts")
        publish("dispatch.status", "command_id", [command])
        # as live: the node's windows come after its command (the flow has taken it: its event is out)
        procs.wait_for(lambda: "command_accepted" in kinds, 60, "the command to be taken",
                       poll=lambda: kinds.extend(serde.decode(m.value())["kind"] for m in events.poll(0.5)))
        publish("fleet.aggregates", "node_path", [aggregate("us/ny", t0, s, 0.0 if s < 200 else 19_500.0)
                                                  for s in range(100, 300, 10)])
        procs.wait_for(lambda: seen.has("dispatch_shortfall", "us/ny", "resolved"), 60, "dispatch_shortfall to resolve",
                       poll=seen.poll)
    seen.counter.close()
    events.close()
    shortfall = [(r["state"], (r["at"] - t0) // S, r["value"]) for r in seen.records if r["rule"] == "dispatch_shortfall"]
    # the second window off its allocation fires (a 20 kW gap, 1 kW allowed); the second within resolves
    assert sorted(set(shortfall)) == [("firing", 120, 20_000.0), ("resolved", 220, 500.0)], shortfall


@pytest.mark.timeout(300)
def test_a_device_removed_from_the_registry_resolves_its_offline_alert_and_a_replay_gives_the_same_alerts(isolated_settings, tmp_path):
    """ny-2 falls silent: device_offline fires; the asset registry's ``device_removed`` on fleet.events (encoded
    with the registered schema) resolves it, and it does not fire again as time goes on. Then ``vpp replay alerts``
    over the dumped inputs gives the same alert records as the live run."""
    settings = isolated_settings
    serde = Serde.from_settings(settings)
    producer = Producer(client_config(settings))
    t0 = (int(time.time()) // 60 - 60) * 60 * S
    site = "us/ny/con"

    def publish(topic: str, key: str, records: list[dict]) -> None:
        name = settings.topic(topic)
        for r in records:  # one partition: the flow's time is the lowest partition's, and a silent device's would stay
            producer.produce(name, serde.encode(name, r), r[key], partition=0)
        producer.flush(30)

    def readings(start_s: int, end_s: int) -> list[dict]:
        return [reading(d, site, t0 + t * S, True) for t in range(start_s, end_s, 5) for d in ("ny-0", "ny-1", "ny-2")
                if not (d == "ny-2" and t >= 100 or d == "ny-1" and t >= 400)]

    removed = {"event_id": "e-removed-ny-2", "kind": "device_removed", "subject": "ny-2", "node_path": "us/ny/con",
               "at": t0 + 300 * S, "detail": {"changed_by": "test", "reason": "decommissioned", "site_id": "con"}}
    seen = AlertsSeen(settings, serde)
    with VppProcesses(vpp_env(settings), tmp_path / "flow.log") as procs:
        procs.start("run", "alerts")
        publish("telemetry.canonical", "device_id", readings(0, 300))
        procs.wait_for(lambda: seen.has("device_offline", "ny-2", "firing"), 60, "device_offline to fire", poll=seen.poll)
        publish("fleet.events", "subject", [removed])
        procs.wait_for(lambda: seen.has("device_offline", "ny-2", "resolved"), 60, "the removal to resolve it",
                       poll=seen.poll)
        publish("telemetry.canonical", "device_id", readings(300, 600))
        # ny-1 falls silent at 400 s: once its alert fires, the flow's time is past 490 s
        procs.wait_for(lambda: seen.has("device_offline", "ny-1", "firing"), 60, "ny-1's offline alert", poll=seen.poll)
    seen.counter.close()
    ny2 = sorted((r["state"], r["summary"]) for r in seen.records if r["subject"] == "ny-2")  # no restart: no copies
    assert ny2 == [("firing", "device ny-2: no reading for 90 s (threshold 90 s)"),
                   ("resolved", "device ny-2: removed from the registry")], ny2

    # `vpp replay alerts` over the dumped inputs (in the order they reached the flow) gives the same alerts
    dumps = []
    for topic in ("telemetry.canonical", "fleet.events"):
        dump_topic(settings, topic, tmp_path / f"{topic}.dump.jsonl")
        dumps.append(tmp_path / f"{topic}.dump.jsonl")
    (tmp_path / "assets.csv").write_text("")
    replay(settings, "alerts", merge_by_timestamp(dumps, tmp_path / "inputs.jsonl"), tmp_path / "assets.csv",
           tmp_path / "replay")
    replayed = [orjson.loads(line)["value"] for line in (tmp_path / "replay" / "fleet.alerts.jsonl").read_bytes().splitlines()]
    assert sorted(map(orjson.dumps, replayed)) == sorted(map(orjson.dumps, seen.records))
