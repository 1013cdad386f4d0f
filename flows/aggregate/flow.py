"""Flow ``aggregate``: ``telemetry.canonical`` -> ``fleet.aggregates`` (+ ``telemetry.dlq`` for undecodable input).

The declaration and its two stateful steps; the rules live in ``flows.aggregate.logic``, their
column-wise application to a bucket of devices in ``flows.aggregate.devices``.

Keys and stages (both key spaces are fixed forever: recovery finds state by key):

1. ``group`` (stateless, on the worker reading the input): decode a batch,
   reduce each reading to a tuple, group by device bucket
   (``crc32(device_id) % AGGREGATE_BUCKETS``) and compute the batch's
   watermark candidate per source partition. EVERY bucket gets one item per
   input batch, with its readings (maybe none) and the candidates: the
   watermark reaches quiet buckets too, and the per-key cost is paid per
   bucket and batch, not per reading.
2. ``devices`` (``stateful_batch`` keyed by bucket): the readings of each
   open window and, in columns, each device's last state. When the
   watermark passes a window's end + lateness, the bucket closes it for all
   its devices at once (array arithmetic): one summary per device (emitted
   as the device leaf record), rolled up level by level into this bucket's
   part of every inner node, which goes to the node's shard
   (``crc32(node_path) % NODE_SHARDS``) as one array per shard. Each closing sends every shard one
   item carrying the bucket's frontier (last window closed), with or without
   parts.
3. ``nodes`` (``stateful_batch`` keyed by node shard): adds the parts of
   each node; a window is complete when every bucket's frontier has passed
   it, and is then emitted, node by node. Completeness is by count of
   buckets, so the result does not depend on timing, batching of the
   exchange, or worker count.
4. Output, in three streams declared in this order: the regions (nodes above
   the sites, the root among them) with their own sink, then the sites and
   the device leaves. A worker runs its steps in declaration order, so a
   window's root is written before its ~2 records per device are encoded.

Watermark: per source partition (Kafka partition, or the dump's
``partition`` field) the 90th percentile of each batch's event times; the
watermark is the minimum over partitions minus ``lateness_s``. With
``idle_advance`` (the default against Kafka), a partition that has not
advanced for ``lateness_s`` of wall time stops holding the others back, and
when all are idle the watermark moves on with the wall clock, so the last
windows close without more input. Replay has no wall clock: windows close by
event time only, and the last ones at end of input.

At-least-once: bucket and shard states are snapshotted in the same epoch as
the input offsets, so after a crash the input since the snapshot is read
again into the restored state and the same windows close with the same
records; a record already produced may be produced again (identical), and
the stores upsert by (node, window).
"""

from __future__ import annotations

import pickle
import time
from functools import partial
from typing import Any, Callable, Iterable

import bytewax.operators as op
import numpy as np
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from flows._common.buckets import BucketOf
from flows._common.environment import flow_from_environment
from flows.aggregate.avro import NodeAggregateEncoder, encode_leaves, encode_nodes
from flows.aggregate.devices import BucketState, close_through, ingest
from flows.aggregate.logic import (
    DEVICE_ID,
    TS,
    ShardState,
    ShardWindow,
    WindowParams,
    reading_of,
    robust_max,
    shard_add,
    shard_close_ready,
    shard_flush,
    watermark_ms,
)
from flows._common.decode import dead_letters_only, decoded_messages, records_only
from sinks.ports import KafkaPorts, Ports
from vpp.observability import FlowMetrics

__all__ = ["build_flow", "OUTPUT_TOPICS", "AGGREGATE_BUCKETS", "NODE_SHARDS", "DeviceBuckets", "NodeShards", "flow"]

OUTPUT_TOPICS = ("fleet.aggregates", "telemetry.dlq")

#: Fixed forever (state keys). 64 buckets of devices: enough to spread over processes, few enough that the
#: per-key cost (one item per bucket per input batch) stays small against the readings of the batch.
AGGREGATE_BUCKETS = 64
#: Fixed forever. Each bucket sends every shard one item per closing: buckets x shards items a window.
NODE_SHARDS = 16

BUCKET_KEYS = tuple(f"devices-{i:02d}" for i in range(AGGREGATE_BUCKETS))
SHARD_KEYS = tuple(f"nodes-{i:02d}" for i in range(NODE_SHARDS))

#: a device's bucket, 0 .. AGGREGATE_BUCKETS - 1
device_bucket = BucketOf(AGGREGATE_BUCKETS)


# -- step 1: decode, group by bucket, watermark candidates ----------------------------------------------

def group_by_bucket(serde, dlq_topic: str, registry, metrics: FlowMetrics, msgs: list[KafkaSourceMessage]) -> list[Any]:
    """``(bucket key, (bucket, candidates, readings))`` for every bucket, and dead letters (OutMessage)."""
    registry.refresh_if_due()
    groups: list[list[tuple]] = [[] for _ in range(AGGREGATE_BUCKETS)]
    event_times: dict[Any, list[int]] = {}
    out: list[Any] = []
    bucket_of = device_bucket
    for msg, r in decoded_messages(serde, dlq_topic, msgs, out, reading_of, metrics):
        groups[bucket_of[r[DEVICE_ID]]].append(r)
        times = event_times.get(msg.partition)
        if times is None:
            event_times[msg.partition] = [r[TS]]
        else:
            times.append(r[TS])
    metrics.count_in(len(msgs))
    candidates = tuple((p, robust_max(times), max(times)) for p, times in event_times.items())
    out.extend((BUCKET_KEYS[b], (b, candidates, groups[b])) for b in range(AGGREGATE_BUCKETS))
    return out


# -- step 2: device buckets ------------------------------------------------------------------------------

def _wall_ms() -> int:
    return int(time.time() * 1000)


def _resume(snapshot: bytes | None, kind: type):
    """The state a step snapshotted, or a fresh one; a snapshot of another layout stops the flow with why."""
    if not snapshot:
        return kind()
    try:
        state = pickle.loads(snapshot)
    except (pickle.UnpicklingError, AttributeError, ImportError, TypeError, EOFError, ValueError) as exc:
        state = exc
    if not isinstance(state, kind):
        raise RuntimeError(
            f"aggregate: the recovery snapshot is not a {kind.__name__} of this version ({state!r:.200}); it was "
            "written by an older layout (before device state in columns). Resume it with the version that wrote "
            "it, or start this flow on a fresh recovery directory: it then reads telemetry.canonical from its "
            "starting offset again, and the stores upsert by node and window")
    return state


class DeviceBuckets(StatefulBatchLogic):
    """One bucket of devices (see ``flows.aggregate.devices.BucketState``); emits leaves and node parts.

    Emits ``("leaves", window, ClosedWindow)`` and ``("parts", shard, (bucket, frontier,
    {window: (node paths, summaries, is_site)}))``. With ``idle_advance`` the wall clock (``now_ms``) moves the watermark
    of idle partitions; the times it uses are not snapshotted, so a restart starts them afresh.
    """

    def __init__(self, resume: bytes | None, *, params: WindowParams, registry, metrics: FlowMetrics,
                 expected_partitions: frozenset | None, idle_advance: bool, now_ms: Callable[[], int] = _wall_ms,
                 wake_ms: int = 1000):
        self.state: BucketState = _resume(resume, BucketState)
        self._params = params
        self._registry = registry
        self._metrics = metrics
        self._expected = expected_partitions
        self._idle_advance = idle_advance
        self._now_ms = now_ms
        self._wake_ms = wake_ms
        now = now_ms() if idle_advance else 0
        self._started_ms = now
        self._advanced_ms: dict[Any, int] = {p: now for p in self.state.partition_max}
        self._next_wake = None

    # -- watermark -----------------------------------------------------------------------------
    def _watermark(self) -> int | None:
        state, lateness = self.state, self._params.lateness_ms
        if not self._idle_advance:
            wm = watermark_ms(state.partition_max, lateness, expected=self._expected)
        else:
            now = self._now_ms()
            idle_after = max(lateness, 1_000)  # wall ms without progress before a partition counts as idle
            idle = {p for p, t in self._advanced_ms.items() if now - t > idle_after}
            if self._expected and now - self._started_ms > idle_after:
                idle |= {p for p in self._expected if p not in state.partition_max}
            last_advance = max(self._advanced_ms.values(), default=self._started_ms)
            wm = watermark_ms(state.partition_max, lateness, expected=self._expected, idle=idle,
                              idle_advance_ms=max(0, now - last_advance - idle_after))
        if wm is not None and (state.watermark is None or wm > state.watermark):
            state.watermark = wm
        return state.watermark

    def _close(self, target: int | None) -> list[tuple]:
        state = self.state
        if target is None or (state.closed is not None and target <= state.closed):
            return []
        closed = close_through(state, target, self._params, self._registry.assets,
                               getattr(self._registry, "generation", None), getattr(self._registry, "removed", ()))
        out: list[tuple] = []
        parts: list[dict[int, tuple]] = [{} for _ in range(NODE_SHARDS)]
        shard_of = state.nodes.shards(NODE_SHARDS)
        for c in closed:
            out.append(("leaves", c.window, c))
            shards = shard_of[c.node_ids]
            order = np.argsort(shards, kind="stable")
            bounds = np.searchsorted(shards[order], np.arange(NODE_SHARDS + 1)).tolist()
            paths = c.node_paths
            for shard in range(NODE_SHARDS):
                lo, hi = bounds[shard], bounds[shard + 1]
                if lo < hi:
                    rows = order[lo:hi]
                    parts[shard][c.window] = ([paths[i] for i in rows.tolist()], c.node_summaries[rows],
                                              c.node_is_site[rows])
        for shard in range(NODE_SHARDS):  # every shard learns the new frontier, with or without parts
            out.append(("parts", shard, (state.bucket, target, parts[shard])))
        return out

    def _close_to_watermark(self) -> list[tuple]:
        wm = self._watermark()
        return [] if wm is None else self._close(wm // self._params.window_ms - 1)

    # -- bytewax ---------------------------------------------------------------------------------
    def on_batch(self, items: list[tuple[int, tuple, list]]) -> tuple[list[tuple], bool]:
        # One item is one input batch. Each is placed, then moves the watermark, then closes windows, in
        # turn: how many items bytewax hands over at once must not decide which readings are late.
        state, params = self.state, self._params
        late = dups = 0
        pmax = state.partition_max
        out: list[tuple] = []
        for bucket, candidates, readings in items:
            state.bucket = bucket
            if readings:
                n_late, n_dups = ingest(state, readings, params)
                late += n_late
                dups += n_dups
            raised = False
            for candidate in candidates:  # (partition, robust max, max) of the batch's event times
                p, t = candidate[0], candidate[1]
                if t > pmax.get(p, t - 1):
                    pmax[p] = t
                    raised = True
                    if self._idle_advance:
                        self._advanced_ms[p] = self._now_ms()
                top = candidate[-1]
                if top > state.event_max.get(p, top - 1):
                    state.event_max[p] = top
            if raised:
                out.extend(self._close_to_watermark())
        self._metrics.count_late(late)
        self._metrics.count_duplicates(dups)
        if self._idle_advance:
            out.extend(self._close_to_watermark())
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self):
        if not self._idle_advance:
            return None
        if self._next_wake is None:
            from datetime import datetime, timedelta, timezone

            self._next_wake = datetime.now(timezone.utc) + timedelta(milliseconds=self._wake_ms)
        return self._next_wake

    def on_notify(self) -> tuple[list[tuple], bool]:
        self._next_wake = None
        return self._close_to_watermark(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple], bool]:
        """End of input: close every window up to the one holding the latest event time seen, in any bucket.

        Also the readings of a clock running ahead of the rest, which the watermark (a robust max) left
        open: live, the wall clock closes their windows once it gets there; a replay gets there at its end.
        Every bucket sees the same maxima (every batch's candidates reach every bucket), so every bucket
        closes the same windows and each node's last windows are complete.
        """
        state = self.state
        if not state.partition_max:
            return [], StatefulBatchLogic.RETAIN
        final = max(*state.partition_max.values(), *state.event_max.values()) // self._params.window_ms
        return self._close(final), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def leaves_only(items: list[tuple[str, tuple]]) -> list[tuple]:
    return [v for _, v in items if v[0] == "leaves"]


def parts_by_shard(items: list[tuple[str, tuple]]) -> list[tuple[str, tuple]]:
    return [(SHARD_KEYS[v[1]], v[2]) for _, v in items if v[0] == "parts"]


# -- step 3: node shards --------------------------------------------------------------------------------

class NodeShards(StatefulBatchLogic):
    """Adds every bucket's part of the nodes of one shard; emits a ``ShardWindow`` when a window is complete."""

    def __init__(self, resume: bytes | None, *, buckets: int = AGGREGATE_BUCKETS):
        self.state: ShardState = _resume(resume, ShardState)
        self._buckets = buckets

    def on_batch(self, items: list[tuple[int, int, dict]]) -> tuple[list[tuple], bool]:
        for bucket, frontier, windows in items:
            shard_add(self.state, bucket, frontier, windows)
        return shard_close_ready(self.state, self._buckets), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple], bool]:
        return shard_flush(self.state), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


# -- encoding --------------------------------------------------------------------------------------------

def _split(items: list[tuple[str, ShardWindow]], sites: bool) -> list[tuple[str, tuple]]:
    out = []
    for key, (window, paths, summaries, is_site) in items:
        rows = np.flatnonzero(is_site if sites else ~is_site)
        if len(rows):
            out.append((key, (window, [paths[i] for i in rows.tolist()], summaries[rows])))
    return out


def regions_only(items: list[tuple[str, ShardWindow]]) -> list[tuple[str, tuple]]:
    """The nodes above the sites (the root, states, utilities...): few, and what most consumers wait for."""
    return _split(items, sites=False)


def sites_only(items: list[tuple[str, ShardWindow]]) -> list[tuple[str, tuple]]:
    return _split(items, sites=True)


# -- the flow ---------------------------------------------------------------------------------------------

def build_flow(settings, *, ports: Ports | None = None, assets=None, source_partitions: Iterable | None = None,
               idle_advance: bool | None = None) -> Dataflow:
    """``ports`` default to the configured broker and ``assets`` to the PostgreSQL registry cache.

    ``source_partitions``: the input partitions the watermark waits for (default: the configured partition
    count of ``telemetry.canonical`` against Kafka; whatever is seen, otherwise). ``idle_advance``: let the
    wall clock advance idle partitions (default: against Kafka only).
    """
    kafka = ports is None
    ports = ports or KafkaPorts(settings)
    if assets is None:
        from vpp.assets import asset_from_row
        from sinks.asset_cache import AssetCache

        assets = AssetCache(settings.postgres_dsn, asset_from_row, refresh_s=settings.assets_refresh_s)
    if source_partitions is None and kafka:
        source_partitions = range(settings.partitions.get("telemetry.canonical", 1))
    expected = frozenset(source_partitions) if source_partitions is not None else None
    idle_advance = kafka if idle_advance is None else idle_advance
    params = WindowParams.from_settings(settings)
    metrics = FlowMetrics.for_flow("aggregate")
    aggregates_topic, dlq_topic = ports.topic("fleet.aggregates"), ports.topic("telemetry.dlq")
    encoder = NodeAggregateEncoder(ports.serde.schema_id(aggregates_topic), params.window_ms)

    flow = Dataflow("aggregate")
    canonical = ports.read(flow, "canonical_in", ["telemetry.canonical"])
    grouped = op.flat_map_batch("group", canonical, partial(group_by_bucket, ports.serde, dlq_topic, assets, metrics))
    dead_letters = op.flat_map_batch("dead_letters", grouped, dead_letters_only)
    buckets_in = op.flat_map_batch("bucket_items", grouped, records_only)
    buckets_out = op.stateful_batch("devices", buckets_in, partial(
        DeviceBuckets, params=params, registry=assets, metrics=metrics, expected_partitions=expected,
        idle_advance=idle_advance))
    # Records leave in three streams, declared in the order a window's records should reach the topic: the
    # regions above the sites (the root first in line: what dispatch, peak shaving and the autobidder read),
    # then the sites, then the device leaves. A worker runs its steps in the order they are declared, so the
    # regions' sink writes a window before its ~100,000 sites and leaves are encoded.
    parts = op.flat_map_batch("parts", buckets_out, parts_by_shard)
    nodes = op.stateful_batch("nodes", parts, NodeShards)
    regions = op.flat_map_batch("regions", nodes, regions_only)
    ports.write("regions_out", op.flat_map_batch("encode_regions", regions, partial(
        encode_nodes, encoder, aggregates_topic, params.window_ms, metrics)))
    sites = op.flat_map_batch("sites", nodes, sites_only)
    site_out = op.flat_map_batch("encode_sites", sites, partial(encode_nodes, encoder, aggregates_topic,
                                                                params.window_ms, metrics))
    leaves = op.flat_map_batch("leaves", buckets_out, leaves_only)
    leaf_out = op.flat_map_batch("encode_leaves", leaves, partial(encode_leaves, encoder, aggregates_topic,
                                                                   params.window_ms, metrics))
    ports.write("aggregates_out", op.merge("aggregates", site_out, leaf_out))
    ports.write("dlq_out", dead_letters)
    return flow


__getattr__ = flow_from_environment(build_flow)
