"""Flow ``alerts``: telemetry.canonical + fleet.aggregates + telemetry.dlq + dispatch.status + fleet.events
-> ``fleet.alerts`` + ``fleet.events``.

One input step reads the four topics (in replay they keep the dump's order). Each message is
decoded and becomes a small event tuple (``flows.alerts.state.Event``) routed to a key:

- readings, aggregates and dispatch statuses go to the **root of the fleet tree** they concern:
  grid_outage counts the devices under a node and inhibits device alerts under it, so a node and
  every device below it must share one state (the same reason the dispatch flow keys by root);
- dead letters go to one key, ``#dlq``, counted per dialect (the envelope's ``dialect``);
- of fleet.events only ``device_removed`` and ``device_moved`` to another tree (from the asset registry)
  matter: they go to the root the device was under, whose state forgets it and ends its open alerts.

Time is event time (the readings' ``ts``, a window's end, a status's ``at``, a dead letter's broker
timestamp). Each reader (worker) keeps its partitions' latest event times; its watermark is the
lowest of them (readings' partitions set the pace; with a wall clock, a partition that delivered
nothing for ``reader_idle_s`` is idle and not waited for). Whenever it moves a tick
(``alert_tick_s``) or more, and at the end of a batch, every key the reader knows gets a clock
event carrying it, between the other events: silence is judged against it, so a partition read
ahead of the others does not make the devices of the others look offline, and a large batch is
judged as a small one. Partitions are read in turn, ``KAFKA_BATCH`` messages each, so a backlog
advances them together.

dispatch.status also gives ``command_*`` events directly (stateless; their ids are hashes, so a
status read twice is one event). A message that cannot be decoded becomes a dead letter on
``telemetry.dlq`` (not one read from telemetry.dlq itself: that one is counted under the dialect
``unknown``, and re-sending it would loop).

Restart: the per-key state (:class:`AlertState`) is in bytewax's recovery snapshots with the input
offsets; after a crash the input since the snapshot is read again and gives the same alert
records with the same ids (at-least-once: the store keeps one row per transition). A state
resumed from a snapshot judges no silence for one offline period of event time and, with a wall
clock (Kafka), of wall time too: a backlog is read partition by partition, and a device of a
partition not read yet is not offline. An alert held back this way is the same alert (its id
depends on when the silence began), only later.
"""

from __future__ import annotations

import pickle
import threading
import uuid
from functools import lru_cache, partial
import time
from typing import Any, Callable

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from flows._common.environment import flow_from_environment
from flows.alerts.logic import Emitted, RuleConfig, command_event
from flows.alerts.state import AlertState
from flows._common.decode import dead_letter_message, dead_letters_only, decode_each, records_only
from sinks.dumps import base_topic
from sinks.messages import OutMessage
from sinks.ports import KafkaPorts, Ports
from vpp.dead_letters import kafka_timestamp_ms
from vpp.observability import FlowMetrics

__all__ = ["build_flow", "INPUT_TOPICS", "OUTPUT_TOPICS", "AlertLogic", "Router", "dlq_dialect", "DLQ_KEY", "device_gone"]

INPUT_TOPICS = ["telemetry.canonical", "fleet.aggregates", "telemetry.dlq", "dispatch.status", "fleet.events"]
OUTPUT_TOPICS = ("fleet.alerts", "fleet.events", "telemetry.dlq")
DLQ_KEY = "#dlq"
KAFKA_BATCH = 100  # messages per partition and poll


def dlq_dialect(raw: bytes) -> str:
    """The dialect a dead letter's raw envelope names, ``unknown`` when it names none (or is no JSON)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "unknown"
    dialect = doc.get("dialect") if isinstance(doc, dict) else None
    return dialect if isinstance(dialect, str) and dialect else "unknown"


@lru_cache(maxsize=65_536)
def _root(path: str) -> str:
    return path.strip().strip("/").split("/", 1)[0]


_base_topic = lru_cache(maxsize=256)(base_topic)


class _Watermark:
    """One reader's event time: the lowest of its partitions' latest; with a wall clock, a partition that
    has delivered nothing for ``idle_s`` while behind the others is idle and not waited for."""

    def __init__(self, idle_s: float, tick_ms: int):
        self.source = uuid.uuid4().hex[:12]
        self.idle_s, self.tick_ms = idle_s, tick_ms
        self.latest: dict[tuple[str, int], int] = {}  # (topic, partition) -> latest event time
        self.delivered: dict[tuple[str, int], float] = {}  # (topic, partition) -> wall time it last delivered
        self.roots: set[str] = set()  # the tree roots this reader has seen: each gets its clock
        self.sent: int | None = None  # the last watermark sent as a clock
        self.wall: float | None = None  # wall time of the batch being read (None: no wall clock, replay)

    def see(self, topic: str, partition: int, ts: int) -> bool:
        """Note an event time; True when the watermark moved a tick or more past the last clock sent."""
        key = (topic, partition)
        if self.wall is not None:
            self.delivered[key] = self.wall
        if ts <= self.latest.get(key, ts - 1):
            return False
        self.latest[key] = ts
        if self.sent is None:
            return True
        now = self.current()
        return now is not None and now >= self.sent + self.tick_ms

    def current(self) -> int | None:
        # the dense stream (readings) sets the pace when there is one; sparse topics would hold it back
        keys = [k for k in self.latest if k[0] == "telemetry.canonical"] or list(self.latest)
        if not keys:
            return None
        if self.wall is not None:
            active = [k for k in keys if self.delivered.get(k, self.wall) >= self.wall - self.idle_s]
            keys = active or keys
        return min(self.latest[k] for k in keys)


class Router:
    """Decode a batch and route its events by key, each key's list ending with this reader's clock.

    Per worker thread: its partitions' latest event times and the roots it has seen.
    """

    def __init__(self, serde, dlq_topic: str, metrics: FlowMetrics, *, idle_s: float, tick_ms: int,
                 wall_clock: Callable[[], float] | None = None):
        self.serde, self.dlq_topic, self.metrics = serde, dlq_topic, metrics
        self.idle_s, self.tick_ms, self.wall_clock = idle_s, tick_ms, wall_clock
        self._marks: dict[int, _Watermark] = {}
        self._lock = threading.Lock()

    def _watermark(self) -> _Watermark:
        # by OS thread id: bytewax calls from its worker threads with a fresh Python thread state per call,
        # so a threading.local would be new each batch
        ident = threading.get_ident()
        mark = self._marks.get(ident)
        if mark is None:
            with self._lock:
                mark = self._marks.setdefault(ident, _Watermark(self.idle_s, self.tick_ms))
        return mark

    @staticmethod
    def _clock(mark: _Watermark, groups: dict[str, list]) -> None:
        now = mark.current()
        if now is None:
            return
        mark.sent = now
        clock = ("c", now, mark.source, mark.wall)
        for key in mark.roots | {DLQ_KEY}:
            groups.setdefault(key, []).append(clock)

    def __call__(self, msgs: list[KafkaSourceMessage]) -> list[Any]:
        mark = self._watermark()
        mark.wall = self.wall_clock() if self.wall_clock is not None else None
        out: list[Any] = []
        groups: dict[str, list] = {}
        for msg, rec, failure in decode_each(self.serde, msgs):
            topic = _base_topic(msg.topic)
            if failure is not None:
                if topic == "telemetry.dlq":  # counted, not sent back to where it came from (that would loop)
                    ts = kafka_timestamp_ms(msg)
                    if ts is not None:
                        groups.setdefault(DLQ_KEY, []).append(("d", ts, "unknown"))
                    continue
                out.append(dead_letter_message(self.serde, self.dlq_topic, msg, *failure))
                continue
            if topic == "telemetry.canonical":
                ev = ("r", rec["ts"], rec["device_id"], rec["region_path"], rec.get("soc_pct"), rec.get("grid_connected"))
                key = _root(rec["region_path"])
            elif topic == "fleet.aggregates":
                ev = ("a", rec["window_end"], rec["node_path"], rec["window_start"], rec["battery_w"])
                key = _root(rec["node_path"])
            elif topic == "dispatch.status":
                node = rec["node_path"].strip().strip("/")
                ev = ("s", rec["at"], node, rec["command_id"], rec["state"], rec["allocated_w"])
                key = _root(node)
                event = command_event(rec)
                if event is not None:
                    out.append(event)  # a dict: not keyed, straight to fleet.events
            elif topic == "telemetry.dlq":
                ts = kafka_timestamp_ms(msg)
                if ts is None:
                    continue  # no time to count it at
                ev, key = ("d", ts, dlq_dialect(rec["raw"])), DLQ_KEY
            elif topic == "fleet.events":
                gone = device_gone(rec)  # (this flow's own alert events among the others)
                if gone is not None:
                    groups.setdefault(gone[0], []).append(gone[1])
                continue  # a fact about the registry, not about time: the watermark does not move
            else:
                continue
            if key:
                if key not in groups and key != DLQ_KEY:
                    mark.roots.add(key)
                groups.setdefault(key, []).append(ev)
            if mark.see(topic, msg.partition, ev[1]):
                self._clock(mark, groups)  # between events, so that a batch's size changes nothing
        if mark.current() != mark.sent:
            self._clock(mark, groups)
        out.extend(groups.items())
        self.metrics.count_in(len(msgs))
        return out


def device_gone(event: dict[str, Any]) -> tuple[str, tuple] | None:
    """``(key, ("x", at, device_id, why))`` when a ``fleet.events`` record takes a device out of a tree's state: a
    ``device_removed``, or a ``device_moved`` to another tree (the old tree forgets it); None for any other."""
    kind, device = event["kind"], event["subject"]
    if kind == "device_removed":
        root, why = _root(event["node_path"]), f"device {device}: removed from the registry"
    elif kind == "device_moved":
        root = _root((event.get("detail") or {}).get("from_node_path", ""))
        why = f"device {device}: moved to {event['node_path']}"
        if root == _root(event["node_path"]):
            return None  # the same tree: its next reading carries the new path
    else:
        return None
    return (root, ("x", event["at"], device, why)) if root else None


def keyed_events(items: list[Any]) -> list[tuple[str, list]]:
    """The ``(key, events)`` pairs of a routed batch."""
    return [i for i in items if type(i) is tuple]


def command_events(items: list[Any]) -> list[dict]:
    """The ``fleet.events`` records of a routed batch (from dispatch statuses)."""
    return [i for i in items if type(i) is dict]


class AlertLogic(StatefulBatchLogic):
    """Adapter from bytewax to :class:`AlertState` (one per key)."""

    def __init__(self, resume: bytes | None, *, cfg: RuleConfig, wall_clock: Callable[[], float] | None = None):
        state = pickle.loads(resume) if resume is not None else None
        self._wall_clock = wall_clock
        self._hold_until = None
        if state is not None:
            state.cfg = cfg  # the current settings win after a restart
            state.restarted()
            if wall_clock is not None:
                self._hold_until = wall_clock() + cfg.offline_ms / 1000
        self.state = state or AlertState(cfg)

    def on_batch(self, batches: list[list]) -> tuple[list[Emitted], bool]:
        if self._hold_until is not None:
            self.state.offline_hold = self._wall_clock() < self._hold_until
            if not self.state.offline_hold:
                self._hold_until = None
        out = self.state.step(ev for events in batches for ev in events)
        return ([out] if out else []), (StatefulBatchLogic.DISCARD if self.state.empty() else StatefulBatchLogic.RETAIN)

    def on_eof(self) -> tuple[list[Emitted], bool]:
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)  # a copy: the state goes on changing


def encode_outputs(serde, alert_topic: str, event_topic: str, metrics: FlowMetrics, items: list) -> list[OutMessage]:
    """``(key, Emitted)`` from the state and bare event records (command events) -> topic messages."""
    alerts: list[dict] = []
    events: list[dict] = []
    for item in items:
        if isinstance(item, dict):
            events.append(item)
        else:
            alerts.extend(item[1].alerts)
            events.extend(item[1].events)
    out: list[OutMessage] = []
    if alerts:
        values = serde.encode_many(alert_topic, alerts)
        out.extend(OutMessage(alert_topic, a["alert_id"], v, a["at"]) for a, v in zip(alerts, values))
        metrics.count_out(len(values), alert_topic)
    if events:
        values = serde.encode_many(event_topic, events)
        out.extend(OutMessage(event_topic, e["subject"], v, e["at"]) for e, v in zip(events, values))
        metrics.count_out(len(values), event_topic)
    return out


_AUTO: Any = object()


def build_flow(settings, *, ports: Ports | None = None, wall_clock: Callable[[], float] | None = _AUTO) -> Dataflow:
    """The ``alerts`` dataflow on ``ports`` (default: the configured broker).

    ``wall_clock``: seconds (default ``time.time`` with Kafka ports, None otherwise): when a reader or a
    partition is idle, and how long a resumed state waits before judging silence, beside the event-time wait.
    """
    kafka = ports is None or isinstance(ports, KafkaPorts)
    # small batches per partition: partitions are read in turn, a batch each, and time is the slowest
    # partition's: a batch of a small fleet's partition could otherwise span more than an offline period
    ports = ports or KafkaPorts(settings, batch_size=KAFKA_BATCH)
    if wall_clock is _AUTO:
        wall_clock = time.time if kafka else None  # comparable between processes (readers' idleness)
    metrics = FlowMetrics.for_flow("alerts")
    cfg = RuleConfig.from_settings(settings)
    alert_topic, event_topic = ports.topic("fleet.alerts"), ports.topic("fleet.events")

    flow = Dataflow("alerts")
    msgs = ports.read(flow, "alerts_in", INPUT_TOPICS)
    router = Router(ports.serde, ports.topic("telemetry.dlq"), metrics, idle_s=cfg.reader_idle_s, tick_ms=cfg.tick_ms,
                    wall_clock=wall_clock)
    items = op.flat_map_batch("to_events", msgs, router)
    decoded = op.flat_map_batch("decoded", items, records_only)
    dead = op.flat_map_batch("dead_letters", items, dead_letters_only)
    keyed = op.flat_map_batch("keyed_events", decoded, keyed_events)
    commands = op.flat_map_batch("command_events", decoded, command_events)
    emitted = op.stateful_batch("alert_rules", keyed, partial(AlertLogic, cfg=cfg, wall_clock=wall_clock))
    encoded = op.flat_map_batch("encode", op.merge("alerts_and_commands", emitted, commands),
                                partial(encode_outputs, ports.serde, alert_topic, event_topic, metrics))
    ports.write("alerts_out", op.merge("with_dead_letters", encoded, dead))
    return flow


__getattr__ = flow_from_environment(build_flow)
