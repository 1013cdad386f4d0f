"""Publishing the simulated fleet to Kafka and taking its set points from ``device.commands``.

``run_publisher(settings, options, stop_event)`` registers the fleet (CSV and,
unless told not to, PostgreSQL), then paces the simulation: event time runs
``speed`` times faster than the wall clock from ``start``. Each record goes to
``telemetry.raw`` keyed by device_id with the gateway's send time as message
timestamp, through librdkafka's ``murmur2_random`` partitioner (Kafka's
default, the one dumps use). Between steps it reads ``device.commands`` from
the end of every partition (``assign()``, no consumer group) and applies the
set points.

Taking devices offline on demand (``offline_file``): the file lists device
ids or region paths, one per line (``#`` starts a comment). The running
simulator re-reads it whenever it changes and keeps exactly the devices it
names offline: silent, and deaf to set points (``Simulation.set_offline``).
Removing a line, or the file, brings them back.

Conditions on demand (``conditions_file``), read the same way: lines
``islanded <device id or region path>`` and ``garbage <dialect>`` island those
devices (``grid_connected`` false) and make every device of that dialect send
garbage (``Simulation.set_conditions``), for the alert rules to see.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vpp.errors import UserError
from vpp.kafka_security import client_config
from devtools.simulator.faults import FaultConfig
from devtools.simulator.physics import LoadSurge
from devtools.simulator.stream import SetPoint, Simulation, SimulationConfig
from devtools.simulator.tree import Fleet, build_fleet

__all__ = ["PublishOptions", "PublishReport", "run_publisher", "decode_setpoint", "register_fleet", "read_offline_file",
           "read_conditions_file"]

log = logging.getLogger(__name__)

_POLL_INTERVAL_S = 0.05
_COMMANDS_RETRY_S = 5.0


@dataclass(frozen=True)
class PublishOptions:
    n_devices: int = 1000
    depth: int = 5
    fanout: int = 4
    seed: int = 0
    rate_s: float = 5.0
    #: Event-time seconds to simulate; None runs until ``stop_event`` is set.
    duration_s: float | None = None
    #: Event-time seconds per wall-clock second.
    speed: float = 1.0
    #: Event time of the first instant, epoch ms; None means now.
    start_ms: int | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    assets_out: str | None = None
    register: bool = True
    #: Broker-side topic names; None means ``settings.topic(...)``.
    raw_topic: str | None = None
    commands_topic: str | None = None
    #: Scenario (see ``SimulationConfig``): the SoC enrolled devices hold for peak shaving, an evening peak.
    program_reserve_pct: float | None = None
    load_surge: LoadSurge | None = None
    #: A file naming the devices to keep offline now (device ids or region paths, one per line).
    offline_file: str | None = None
    #: A file of conditions to keep now: ``islanded <id or path>`` and ``garbage <dialect>`` lines.
    conditions_file: str | None = None


@dataclass
class PublishReport:
    fleet: Fleet
    assets_csv: Path | None
    produced: int = 0
    delivery_errors: int = 0
    setpoints_applied: int = 0
    bad_commands: int = 0
    last_event_ms: int = 0
    #: Devices offline on demand now (``offline_file``).
    offline_devices: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def decode_setpoint(serde: Any, value: bytes) -> SetPoint:
    """A ``device.commands`` value (Avro, Confluent wire format) as a SetPoint.

    The only place that knows the record's field names: adapt here if they change.
    """
    rec = serde.decode(value)
    return SetPoint(
        device_id=str(rec["device_id"]),
        setpoint_w=float(rec["setpoint_w"]),
        start_ms=int(rec["start"]),
        end_ms=int(rec["end"]),
        command_id=str(rec.get("command_id", "")),
    )


def register_fleet(dsn: str, fleet: Fleet) -> None:
    """Migrate the database and upsert the fleet's assets in one transaction."""
    import psycopg

    from sinks.asset_registry import upsert_assets
    from vpp.db import migrate

    try:
        migrate(dsn)
    except psycopg.Error as exc:
        raise UserError(f"cannot prepare PostgreSQL ({str(exc).strip().splitlines()[0]}); is the stack running (vpp up)?") from exc
    upsert_assets(dsn, fleet.assets())


def _ensure_topic(settings: Any, topic: str, partitions: int) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(settings))
    try:
        md = admin.list_topics(topic=topic, timeout=10)
    except KafkaException as exc:
        raise UserError(f"cannot reach the broker at {settings.broker} ({exc}); is the stack running (vpp up)?") from exc
    found = md.topics.get(topic)
    if found is not None and found.error is None and found.partitions:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        futures[topic].result(timeout=15)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise UserError(f"cannot create topic {topic} on {settings.broker}: {exc}") from exc


def read_offline_file(path: Path) -> list[str]:
    """The device ids and region paths an offline file names (none when it does not exist)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    entries = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [e for e in entries if e]


def read_conditions_file(path: Path) -> tuple[list[str], list[str]]:
    """(islanded ids or paths, garbage dialects) a conditions file names; a line of another kind is an error."""
    islanded: list[str] = []
    garbage: list[str] = []
    for entry in read_offline_file(path):
        kind, _, what = entry.partition(" ")
        if kind == "islanded" and what.strip():
            islanded.append(what.strip())
        elif kind == "garbage" and what.strip():
            garbage.append(what.strip())
        else:
            raise UserError(f"{path}: {entry!r} is not 'islanded <device id or region path>' or 'garbage <dialect>'")
    return islanded, garbage


class _OfflineFile:
    """Applies the offline file to the simulation whenever the file changes."""

    def __init__(self, path: str | None, *, conditions: bool = False):
        self.path = Path(path) if path else None
        self.seen: tuple[int, int] | None = None
        self.conditions = conditions  # a conditions file rather than an offline file

    def apply(self, sim: Simulation) -> int | None:
        """The number of devices offline after a change of the file, None when nothing changed."""
        if self.path is None:
            return None
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self.seen:
            return None
        self.seen = stamp
        if self.conditions:
            off_grid, garbage = sim.set_conditions(*read_conditions_file(self.path))
            log.info("devices islanded on demand: %d; sending garbage: %d", len(off_grid), len(garbage))
            return len(off_grid)
        offline = sim.set_offline(read_offline_file(self.path))
        log.info("devices offline on demand: %d (%s)", len(offline), ", ".join(sorted(offline)[:10]))
        return len(offline)


class OnDemandFiles:
    """The offline and conditions files of a run (``--offline-file``, ``--conditions-file``), applied on change."""

    def __init__(self, options: "PublishOptions"):
        self.offline = _OfflineFile(options.offline_file)
        self.conditions = _OfflineFile(options.conditions_file, conditions=True)

    def apply(self, sim: Simulation, report: "PublishReport") -> None:
        offline = self.offline.apply(sim)
        if offline is not None:
            report.offline_devices = offline
        self.conditions.apply(sim)


class _Commands:
    """Reads set points from the end of every partition of the commands topic."""

    def __init__(self, settings: Any, topic: str):
        self.settings, self.topic = settings, topic
        self.consumer: Any = None
        self.serde: Any = None
        self.next_try = 0.0
        self.bad = 0

    def _attach(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.next_try = time.monotonic() + _COMMANDS_RETRY_S
        consumer = Consumer(client_config(self.settings, **{"group.id": "vpp-simulator", "enable.auto.commit": False,
                                                            "enable.partition.eof": False}))
        md = consumer.list_topics(topic=self.topic, timeout=5)
        found = md.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            consumer.close()
            log.info("topic %s not there yet; set points will be read once it exists", self.topic)
            return
        consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in sorted(found.partitions)])
        self.consumer = consumer
        if self.serde is None:
            from vpp.serde import Serde

            self.serde = Serde.from_settings(self.settings)

    def poll(self) -> list[SetPoint]:
        if self.consumer is None:
            if time.monotonic() < self.next_try:
                return []
            self._attach()
            if self.consumer is None:
                return []
        out = []
        for msg in self.consumer.consume(num_messages=1000, timeout=0):
            if msg.error() is not None or msg.value() is None:
                continue
            try:
                out.append(decode_setpoint(self.serde, msg.value()))
            except Exception as exc:  # a bad command must not stop the fleet: count it and say why
                self.bad += 1
                log.warning("ignoring undecodable set point at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        return out

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def run_publisher(
    settings: Any,
    options: PublishOptions,
    stop_event: threading.Event | None = None,
    on_progress: Callable[[PublishReport], None] | None = None,
) -> PublishReport:
    """Simulate and publish until the duration is over or ``stop_event`` is set."""
    from confluent_kafka import KafkaException, Producer

    from vpp.assets import write_assets_csv

    stop_event = stop_event or threading.Event()
    fleet = build_fleet(options.n_devices, options.depth, options.fanout, options.seed)
    csv_path = Path(options.assets_out) if options.assets_out else Path(settings.state_dir) / "assets.csv"
    if options.register:
        register_fleet(settings.postgres_dsn, fleet)
    # written once the registry holds the fleet: the CSV appearing is the sign that devices are registered
    report = PublishReport(fleet=fleet, assets_csv=write_assets_csv(csv_path, fleet.assets()))
    raw_topic = options.raw_topic or settings.topic("telemetry.raw")
    commands_topic = options.commands_topic or settings.topic("device.commands")
    _ensure_topic(settings, raw_topic, int(settings.partitions.get("telemetry.raw", 4)))

    start_ms = options.start_ms if options.start_ms is not None else int(time.time() * 1000)
    end_ms = None if options.duration_s is None else start_ms + round(options.duration_s * 1000)
    sim = Simulation(fleet, SimulationConfig(start_ms=start_ms, rate_s=options.rate_s, faults=options.faults, seed=options.seed,
                                             program_reserve_pct=options.program_reserve_pct, load_surge=options.load_surge))
    producer = Producer(client_config(settings, **{"partitioner": "murmur2_random", "linger.ms": 20,
                                                   "compression.type": "lz4"}))

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            report.delivery_errors += 1

    def produce(records: list) -> None:
        for rec in records:
            while True:
                try:
                    producer.produce(raw_topic, key=rec.key, value=rec.value, timestamp=rec.timestamp_ms, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise UserError(f"cannot publish to {raw_topic} on {settings.broker}: {exc}") from exc
            report.produced += 1
        producer.poll(0)

    commands = _Commands(settings, commands_topic)
    on_demand = OnDemandFiles(options)
    wall0 = time.monotonic()
    last_progress = wall0
    try:
        while not stop_event.is_set():
            on_demand.apply(sim, report)
            for sp in commands.poll():
                if sim.apply_setpoint(sp):
                    report.setpoints_applied += 1
            event_now = start_ms + int((time.monotonic() - wall0) * 1000 * options.speed)
            if end_ms is not None and event_now >= end_ms:
                produce([e.record for e in sim.advance(end_ms - 1) + sim.drain()])
                report.last_event_ms = end_ms
                break
            produce(sim.step(event_now))
            report.last_event_ms = event_now
            if on_progress and time.monotonic() - last_progress >= 10.0:
                last_progress = time.monotonic()
                report.stats = dict(sim.stats)
                on_progress(report)
            stop_event.wait(_POLL_INTERVAL_S)
    finally:
        remaining = producer.flush(30)
        report.delivery_errors += remaining
        commands.close()
        report.bad_commands = commands.bad
        report.stats = dict(sim.stats)
    return report
