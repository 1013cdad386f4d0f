"""Publishing to a real broker and obeying set points from device.commands (needs the stack)."""

import threading
import time
import uuid

import orjson
import pytest

from devtools.simulator.dump import partition_for
from devtools.simulator.faults import NO_FAULTS
from devtools.simulator.kafka_io import PublishOptions, run_publisher
from devtools.simulator.stream import Simulation, SimulationConfig
from devtools.simulator.tree import build_fleet
from vpp.kafka_security import client_config

START_MS = 1_782_064_800_000


def _create_topics(settings, **partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(settings))
    futures = admin.create_topics([NewTopic(name, num_partitions=n, replication_factor=1) for name, n in partitions.items()])
    for f in futures.values():
        f.result(timeout=15)


def _read_all(settings, topic, expected, timeout_s=20.0):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(client_config(settings, **{"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    md = consumer.list_topics(topic=topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out += [m for m in consumer.consume(num_messages=1000, timeout=0.5) if m.error() is None]
    consumer.close()
    return out


def test_published_records_match_the_simulation_and_land_on_the_murmur2_partition(stack, tmp_path):
    topic = f"t-{uuid.uuid4().hex}.telemetry.raw"
    options = PublishOptions(n_devices=20, seed=4, rate_s=1.0, duration_s=2.0, speed=1.0, start_ms=START_MS,
                             faults=NO_FAULTS, assets_out=str(tmp_path / "assets.csv"), register=False,
                             raw_topic=topic, commands_topic=f"t-{uuid.uuid4().hex}.device.commands")
    report = run_publisher(stack.settings, options)
    expected = [r for r in Simulation(build_fleet(20, seed=4), SimulationConfig(START_MS, 1.0, NO_FAULTS, seed=4)).run(2.0)]
    assert report.produced == len(expected) == 40
    assert report.delivery_errors == 0

    messages = _read_all(stack.settings, topic, len(expected))
    partitions = stack.settings.partitions["telemetry.raw"]
    got = sorted((m.timestamp()[1], m.key(), m.value()) for m in messages)
    assert got == sorted((e.record.timestamp_ms, e.record.key, e.record.value) for e in expected)
    assert all(m.partition() == partition_for(m.key(), partitions) for m in messages)
    assert (tmp_path / "assets.csv").read_text().startswith("device_id,site_id,region_path,timezone,")


def test_the_simulator_registers_its_fleet_in_postgresql(stack, tmp_path):
    from sinks.asset_registry import list_assets

    seed = int(uuid.uuid4().int % 1_000_000)
    options = PublishOptions(n_devices=5, seed=seed, duration_s=0.2, speed=1.0, start_ms=START_MS, faults=NO_FAULTS,
                             assets_out=str(tmp_path / "a.csv"), raw_topic=f"t-{uuid.uuid4().hex}.telemetry.raw",
                             commands_topic=f"t-{uuid.uuid4().hex}.device.commands")
    report = run_publisher(stack.settings, options)
    registered = {a.device_id: a for a in list_assets(stack.postgres_dsn)}
    for asset in report.fleet.assets():
        assert registered[asset.device_id].region_path == asset.region_path


def test_a_set_point_on_device_commands_is_obeyed(stack, tmp_path):
    from confluent_kafka import Producer

    from vpp.serde import Serde, register_schemas

    prefix = f"t-{uuid.uuid4().hex}."
    raw_topic, commands_topic = prefix + "telemetry.raw", prefix + "device.commands"
    _create_topics(stack.settings, **{raw_topic: 4, commands_topic: 2})
    register_schemas(stack.registry_client(admin=True), prefix)  # as a deployment does; our serde only looks up
    fleet = build_fleet(8, seed=6)
    device = fleet.devices[0]
    start_ms = int(time.time() * 1000)
    options = PublishOptions(n_devices=8, seed=6, rate_s=0.25, duration_s=8.0, speed=1.0, start_ms=start_ms,
                             faults=NO_FAULTS, assets_out=str(tmp_path / "a.csv"), register=False,
                             raw_topic=raw_topic, commands_topic=commands_topic)
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=run_publisher(stack.settings, options)))
    worker.start()

    serde = Serde.from_settings(stack.settings)
    command = {"command_id": "c-1", "device_id": device.device_id, "node_path": device.asset.region_path,
               "setpoint_w": 1234.0, "start": start_ms, "end": start_ms + 600_000}
    producer = Producer(client_config(stack.settings))
    while worker.is_alive() and time.time() * 1000 < start_ms + 6_000:  # the consumer attaches at the end of the topic
        producer.produce(commands_topic, key=device.device_id.encode(), value=serde.encode(commands_topic, command))
        producer.flush(5)
        time.sleep(0.5)
    worker.join(30)
    assert result["report"].setpoints_applied > 0

    mine = [orjson.loads(m.value()) for m in _read_all(stack.settings, raw_topic, result["report"].produced)
            if m.key() == device.device_id.encode()]
    mine.sort(key=lambda env: env["received_at"])
    obeying = [i for i, env in enumerate(mine) if _battery_w(env) == pytest.approx(1234.0, abs=0.5 * 10 ** device.w_sf)]
    assert obeying, "the device never followed the set point"
    assert obeying == list(range(obeying[0], len(mine)))  # and kept following it to the end of the run


def _battery_w(envelope):
    """Canonical battery power (> 0 discharging) of a raw envelope, per spec section 2."""
    payload = envelope["payload"]
    if envelope["dialect"] == "tesla-gateway/1":
        return payload["aggregates"]["battery"]["instant_power"]
    if envelope["dialect"] == "sonnen/2":
        return payload["Pac_total_W"]
    battery = payload["models"]["802"]
    return -battery["W"] * 10 ** battery["W_SF"]
