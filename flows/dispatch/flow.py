"""Flow ``dispatch``: ``dispatch.commands`` + ``telemetry.canonical`` -> ``device.commands`` + ``dispatch.status``.

The declaration and its small adapters; the state machine is ``flows.dispatch.state`` and the
split ``flows.dispatch.logic``. The same ``build_flow`` runs against Kafka (``vpp run dispatch``)
and over a dump (``vpp replay dispatch``).

Both topics are read by ONE input step, so in replay commands and readings keep the dump's order.
Each message is decoded, readings are joined with the asset registry (worker-local cache) and a
command learns whether any registered device lies under its node; then events are grouped per
batch by the **root segment of the tree** (``us`` of ``us/ca/pge``) and go to one stateful step.

Why keyed by root: an allocation is one water-filling over every device under the node, and a
command supersedes commands on its own node and below; any finer key would split one allocation
(or one supersession) across workers and need a second, coordinating stage. Every device a
command can ever cover shares the command's root, so root-keyed state is exact, and independent
trees (countries, utilities operated separately) spread over workers. Per-item cost stays low
because the step takes a batch of readings per root at once.

Time: in replay the clock is the readings' event time only. With Kafka (``wall_clock``) the
clock also moves with the wall clock since the last reading, and the step asks to be woken
(``notify_at``) at the next deadline (a window check, a start, an end), so commands expire and
stale devices are dropped without new input.

Restart: the state (devices, active commands, the set point each device follows) is in the
snapshot with the input offsets; after a crash the flow resumes from the last snapshot and re-reads
the input since. Set points already sent may be sent again (at-least-once): the simulator and
the PostgreSQL store absorb copies (same device, start, value). The wall-clock anchor is not
snapshotted: event time resumes where the snapshot left it, as if paused while the flow was down,
so devices do not all look stale while the backlog is read. Devices keep following their last
set point meanwhile, and a set point ends by itself at the command's ``end``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Mapping

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from flows._common.environment import flow_from_environment
from flows._common.decode import dead_letters_only, decoded_messages, records_only
from flows.dispatch.logic import node_covers, normalize_node_path, root_of
from flows.dispatch.state import DeviceReading, DispatchState, Emitted
from sinks.dumps import base_topic
from sinks.messages import OutMessage
from sinks.ports import KafkaPorts, Ports
from vpp.asset_lifecycle import DISPATCHABLE, effective
from vpp.dead_letters import kafka_timestamp_ms
from vpp.observability import FlowMetrics

__all__ = ["build_flow", "OUTPUT_TOPICS", "INPUT_TOPICS", "DispatchLogic", "flow", "device_reading", "Removals"]

INPUT_TOPICS = ["telemetry.canonical", "dispatch.commands"]
OUTPUT_TOPICS = ("device.commands", "dispatch.status", "telemetry.dlq")

_AUTO: Any = object()


# -- stateless: decode, join, group by root ------------------------------------------------------


def _registered_under(assets: Mapping[str, Any], node: str) -> bool:
    return any(node_covers(node, a.region_path, a.device_id) for a in assets.values())


def to_events(serde, dlq_topic: str, registry, metrics: FlowMetrics, msgs: list[KafkaSourceMessage],
              removals: "Removals | None" = None) -> list[Any]:
    """Dead letters (OutMessage) and ``(root, [("readings", [DeviceReading]) | ("command", (record, known)) |
    ("removed", [device_id])])``; a device decommissioned since the last call is ``removed`` in its tree.

    Per root, events keep the input order; consecutive readings travel as one list.
    """
    registry.refresh_if_due()
    removals = removals if removals is not None else Removals()
    out: list[Any] = []
    groups: dict[str, list] = {}
    missing = False
    for msg, rec in decoded_messages(serde, dlq_topic, msgs, out, metrics=metrics):
        topic = base_topic(msg.topic)
        if topic == "dispatch.commands":
            node = normalize_node_path(str(rec.get("node_path") or ""))
            known = bool(node) and _registered_under(registry.assets, node)
            if node and not known and registry.refresh_if_due(missing=True):
                known = _registered_under(registry.assets, node)  # a device registered a moment ago counts
            event = ("command", (rec, known, kafka_timestamp_ms(msg)))
            root = root_of(node)
        else:
            asset = registry.assets.get(rec["device_id"])
            if asset is None:
                if not missing and registry.refresh_if_due(missing=True):
                    asset = registry.assets.get(rec["device_id"])
                missing = True
                if asset is None:
                    metrics.count_dropped("unknown_device")  # canonical readings are of registered devices; the
                    continue                                 # cache will catch up (counted, never silent)
            as_of = getattr(registry.assets, "as_of", None)  # a replay through time: the version of the reading's time
            if as_of is not None and (asset := as_of(rec["device_id"], rec["ts"])) is None:
                metrics.count_dropped("unknown_device")
                continue
            reading = device_reading(rec, asset)
            root = root_of(rec["region_path"])
            events = groups.get(root)
            if events and events[-1][0] == "readings":
                events[-1][1].append(reading)
                continue
            event = ("readings", [reading])
        events = groups.get(root)
        if events is None:
            events = groups[root] = []
            out.append((root, events))
        events.append(event)
    for device_id, asset in removals.new(registry):
        root = root_of(asset.region_path)
        events = groups.get(root)
        if events is None:
            events = groups[root] = []
            out.append((root, events))
        events.append(("removed", [device_id]))
    metrics.count_in(len(msgs))
    return out


def device_reading(rec: dict[str, Any], asset: Any) -> DeviceReading:
    """A canonical reading joined with its device's registry entry: ratings, the programs it is in at the reading's
    time (with the reserve each holds), and whether its lifecycle lets dispatch use it."""
    return DeviceReading(rec["device_id"], rec["region_path"], rec["ts"], rec.get("soc_pct"),
                         rec.get("capacity_wh") or asset.capacity_wh, asset.reserve_pct, asset.max_charge_w,
                         asset.max_discharge_w, tuple(effective(asset.enrollments, rec["ts"]).items()),
                         asset.status in DISPATCHABLE)


class Removals:
    """Which decommissioned devices (the cache's ``removed``) this worker has told its trees about already."""

    def __init__(self) -> None:
        self._told: set[str] = set()

    def new(self, registry) -> list[tuple[str, Any]]:
        removed = getattr(registry, "removed", None)
        if not removed or len(removed) == len(self._told):
            return []
        fresh = [(d, a) for d, a in removed.items() if d not in self._told]
        self._told.update(d for d, _ in fresh)
        return fresh


# -- stateful: the dispatcher of one tree ------------------------------------------------------------


class DispatchLogic(StatefulBatchLogic):
    """Adapter from bytewax to ``DispatchState``: feeds events, keeps wall-clock time for Kafka runs."""

    def __init__(self, resume: bytes | None, *, window_ms: int, staleness_ms: int,
                 wall_clock: Callable[[], float] | None, resend_ms: int = 0):
        self.state = DispatchState.loads(resume) if resume else DispatchState(
            window_ms=window_ms, staleness_ms=staleness_ms, max_lead_ms=3 * window_ms)
        self.state.resend_ms = resend_ms  # configuration, not state: the current setting wins after a restart
        self._wall_clock = wall_clock
        self._anchor_event_ms: int | None = None  # event time and wall time of the last clock move
        self._anchor_wall_s = 0.0

    def _now_ms(self) -> int | None:
        clock = self.state.clock_ms
        if clock is None or self._wall_clock is None:
            return clock
        wall = self._wall_clock()
        if self._anchor_event_ms is None or clock > self._anchor_event_ms:
            self._anchor_event_ms, self._anchor_wall_s = clock, wall
        return self._anchor_event_ms + int((wall - self._anchor_wall_s) * 1000)

    def _tick(self, out: Emitted) -> list[Emitted]:
        now = self._now_ms()
        if now is not None and self._wall_clock is not None:
            self.state.advance(now, out)
            self._anchor_event_ms, self._anchor_wall_s = now, self._wall_clock()
        return [out] if out else []

    def on_batch(self, batches: list[list]) -> tuple[list[Emitted], bool]:
        out, state = Emitted(), self.state
        for events in batches:
            for kind, value in events:
                if kind == "readings":
                    state.on_readings(value, out)
                elif kind == "removed":
                    state.on_removed(value, out)
                else:
                    record, known, issued_ms = value
                    # live, the wall clock moves event time between readings (``_tick``); a replay has only the
                    # messages' own times, so a command's Kafka timestamp moves it there, as the wall clock did
                    state.on_command(record, known, out, issued_ms=issued_ms if self._wall_clock is None else None)
        return self._tick(out), self._keep()

    def _keep(self) -> bool:
        # a tree with no device and no command (a command for an unknown root, rejected) leaves no state behind
        state = self.state
        empty = state.table.n == 0 and not state.active and not state.pending
        return StatefulBatchLogic.DISCARD if empty else StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Emitted], bool]:
        return self._tick(Emitted()), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Emitted], bool]:
        if self._wall_clock is not None:  # a live input never ends; a bounded one (tests) keeps its state
            return [], StatefulBatchLogic.RETAIN
        out = Emitted()
        self.state.end_of_input(out)  # a replay says what became of every command that never started
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._wall_clock is None:
            return None
        deadline = self.state.next_deadline_ms()
        now = self._now_ms()
        if deadline is None or now is None:
            return None
        wall_s = self._wall_clock() + max(0, deadline - now) / 1000.0
        return datetime.fromtimestamp(wall_s, timezone.utc)

    def snapshot(self) -> bytes:
        return self.state.dumps()


# -- outputs ------------------------------------------------------------------------------------


def encode_outputs(serde, setpoint_topic: str, status_topic: str, metrics: FlowMetrics,
                   items: list[tuple[str, Emitted]]) -> list[OutMessage]:
    out: list[OutMessage] = []
    for _, emitted in items:
        if emitted.statuses:
            values = serde.encode_many(status_topic, emitted.statuses)
            out.extend(OutMessage(status_topic, s["command_id"], v, s["at"]) for s, v in zip(emitted.statuses, values))
            metrics.count_out(len(values), status_topic)
        if emitted.setpoints:
            values = serde.encode_many(setpoint_topic, emitted.setpoints)
            out.extend(OutMessage(setpoint_topic, s["device_id"], v, s["start"]) for s, v in zip(emitted.setpoints, values))
            metrics.count_out(len(values), setpoint_topic)
    return out


def control_records(items: list[tuple[str, Emitted]]) -> list[tuple[str, dict]]:
    """``(table kind, record)`` for the command-and-control store, in emission order."""
    out: list[tuple[str, dict]] = []
    for _, emitted in items:
        out.extend(("command", r) for r in emitted.commands)
        out.extend(("status", r) for r in emitted.statuses)
        out.extend(("setpoint", r) for r in emitted.setpoints)
    return out


def build_flow(settings, *, ports: Ports | None = None, assets=None, store: Any = _AUTO,
               wall_clock: Callable[[], float] | None = _AUTO) -> Dataflow:
    """``ports`` default to the configured broker, ``assets`` to the PostgreSQL registry cache.

    ``store``: a sink for command-and-control rows (default: PostgreSQL with Kafka ports, none in
    replay). ``wall_clock``: seconds since the epoch (default ``time.time`` with Kafka ports, None
    in replay: event time only).
    """
    kafka = ports is None or isinstance(ports, KafkaPorts)
    ports = ports or KafkaPorts(settings)
    if assets is None:
        from sinks.asset_cache import AssetCache
        from vpp.assets import asset_from_row

        assets = AssetCache(settings.postgres_dsn, asset_from_row, refresh_s=settings.assets_refresh_s)
    if store is _AUTO:
        from sinks.command_control import CommandControlSink

        store = CommandControlSink(settings.postgres_dsn) if kafka else None
    if wall_clock is _AUTO:
        wall_clock = time.time if kafka else None
    metrics = FlowMetrics.for_flow("dispatch")
    setpoint_topic, status_topic = ports.topic("device.commands"), ports.topic("dispatch.status")
    dlq_topic = ports.topic("telemetry.dlq")

    flow = Dataflow("dispatch")
    msgs = ports.read(flow, "dispatch_in", INPUT_TOPICS)
    items = op.flat_map_batch("to_events", msgs, partial(to_events, ports.serde, dlq_topic, assets, metrics,
                                                                  removals=Removals()))
    events = op.flat_map_batch("events", items, records_only)
    dead = op.flat_map_batch("dead_letters", items, dead_letters_only)
    emitted = op.stateful_batch("dispatch", events, partial(DispatchLogic, window_ms=settings.window_s * 1000,
                                                            staleness_ms=settings.staleness_s * 1000,
                                                            wall_clock=wall_clock,
                                                            resend_ms=settings.setpoint_resend_s * 1000))
    encoded = op.flat_map_batch("encode", emitted, partial(encode_outputs, ports.serde, setpoint_topic, status_topic, metrics))
    ports.write("dispatch_out", op.merge("with_dead_letters", encoded, dead))
    if store is not None:
        op.output("command_control", op.flat_map_batch("control_rows", emitted, control_records), store)
    return flow


__getattr__ = flow_from_environment(build_flow)
