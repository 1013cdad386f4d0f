"""Flow ``canonicalize``: ``telemetry.raw`` -> ``telemetry.canonical`` + ``telemetry.dlq``.

The declaration only: parsing, scrubbing and dedup live in
``flows.canonicalize.logic``. The same ``build_flow`` runs against Kafka
(``vpp run canonicalize``) and over a dump (``vpp replay canonicalize``).

At-least-once: after a crash bytewax resumes from the last snapshot and
re-reads the raw input since then. A re-produced canonical reading is
byte-identical to its first copy (canonicalization is a pure function of the
raw bytes and the registry row), dedup state is restored with the snapshot,
and every consumer absorbs a copy: the time-series point is the same point,
PostgreSQL upserts, aggregation ignores a (device_id, ts) it has counted.
"""

from __future__ import annotations

import pickle
from functools import partial
from operator import itemgetter
from typing import Any, Iterable

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from flows._common.buckets import BucketOf
from flows._common.environment import flow_from_environment
from flows.canonicalize.logic import DedupState, Rejection, canonicalize, dedup_step
from sinks.messages import OutMessage, out_messages
from sinks.ports import KafkaPorts, Ports
from vpp.observability import FlowMetrics

__all__ = ["build_flow", "OUTPUT_TOPICS", "flow"]

OUTPUT_TOPICS = ("telemetry.canonical", "telemetry.dlq")


#: Dedup state is keyed by bucket of device (stable crc32), fixed forever: after a restart state is found
#: by these keys. Buckets rather than one key per device because bytewax's per-key cost dominated the flow
#: (13 us/reading with one key per device; see bench/README.md); each bucket holds per-device states.
DEDUP_BUCKETS = 64


#: a device's dedup bucket key, ``dedup-NN``
dedup_bucket = BucketOf(DEDUP_BUCKETS, "dedup-{:02d}".format)


def grouped_results(results: list[Any]) -> list[Any]:
    """Canonical readings grouped as ``(dedup bucket, [readings in order])``; Rejections as they are.

    Grouping per batch sends a few dozen items through the stateful exchange instead of one per reading.
    """
    groups: dict[str, list[dict]] = {}
    out: list[Any] = []
    for r in results:
        if type(r) is Rejection:
            out.append(r)
        else:
            bucket = dedup_bucket[r["device_id"]]
            group = groups.get(bucket)
            if group is None:
                group = groups[bucket] = []
                out.append((bucket, group))
            group.append(r)
    return out


class DedupBucket(StatefulBatchLogic):
    """Drops a second reading with the same (device_id, ts) within the horizon, for the devices of one bucket."""

    def __init__(self, resume: bytes | dict[str, DedupState] | None, horizon_ms: int):
        # snapshots are pickled (older ones were the dict itself): pickling is several times cheaper than
        # the deep copy a mutable state needs, and bytewax snapshots every touched key at each epoch
        self.states: dict[str, DedupState] = (pickle.loads(resume) if isinstance(resume, bytes) else resume) or {}
        self._horizon_ms = horizon_ms

    def on_batch(self, groups: list[list[dict]]) -> tuple[list[tuple[list[dict], int]], bool]:
        states, fresh, horizon, seen = self.states, [], self._horizon_ms, 0
        prune_every = horizon >> 2
        keep = fresh.append
        for readings in groups:
            seen += len(readings)
            for reading in readings:
                device = reading["device_id"]
                state = states.get(device)
                ts = reading["ts"]
                if state is not None and ts > state.newest_ts and ts - horizon - state.pruned_below <= prune_every:
                    # a device's next reading, newer than any it sent, no pruning due: what dedup_step does
                    # then, without its call and result tuples (most readings; the test of on_batch checks both)
                    state.newest_ts = ts
                    state.seen.add(ts)
                    keep(reading)
                    continue
                states[device], (kept, _) = dedup_step(state, reading, horizon)
                if kept is not None:
                    keep(kept)
        return [(fresh, seen - len(fresh))], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.states, protocol=pickle.HIGHEST_PROTOCOL)


def canonicalize_batch(registry, metrics: FlowMetrics, msgs: list[KafkaSourceMessage], *,
                       platform_clock: bool = True) -> list[Any]:
    """Rejections, and ``(bucket, [canonical dicts])`` groups, in message order within each."""
    registry.refresh_if_due()
    assets = registry.assets
    # a KafkaSourceMessage has topic/partition/offset: it serves as its own SourcePosition
    results = [canonicalize(m.value, m, assets, platform_clock=platform_clock) for m in msgs]
    unknown = [i for i, r in enumerate(results) if type(r) is Rejection and r.reason == "unknown_device"]
    if unknown and registry.refresh_if_due(missing=True):
        # a device registered a moment ago: look again before rejecting it
        for i in unknown:
            m = msgs[i]
            results[i] = canonicalize(m.value, m, registry.assets, platform_clock=platform_clock)
    metrics.count_in(len(msgs))
    return grouped_results(results)


def accepted_only(results: list[Any]) -> list[tuple[str, list[dict]]]:
    return [r for r in results if type(r) is not Rejection]


def rejected_only(results: list[Any]) -> list[Rejection]:
    # two batch filters instead of op.branch: branch calls a predicate per item (3 us/reading measured)
    return [r for r in results if type(r) is Rejection]


_by_ts = itemgetter("ts")


def encode_canonical(serde, topic: str, metrics: FlowMetrics, items: list[tuple[str, tuple[list[dict], int]]]) -> list[OutMessage]:
    fresh = [reading for _, (readings, _) in items for reading in readings]
    # readings were grouped by dedup bucket for the exchange; put them back in event-time order so
    # downstream windows (aggregation) see each batch as time goes, not bucket by bucket (stable sort)
    fresh.sort(key=_by_ts)
    metrics.count_duplicates(sum(duplicates for _, (_, duplicates) in items))
    values = serde.encode_many(topic, fresh)
    metrics.count_out(len(fresh), topic)
    return out_messages(topic, [r["device_id"] for r in fresh], values, timestamps_ms=[r["ts"] for r in fresh])


def encode_dead_letters(serde, topic: str, metrics: FlowMetrics, rejections: Iterable[Rejection]) -> list[OutMessage]:
    out = []
    for r in rejections:
        metrics.count_rejected(r.reason)
        out.append(OutMessage(topic, r.device_id, serde.encode(topic, r.to_record())))
    metrics.count_out(len(out), topic)
    return out


def build_flow(settings, *, ports: Ports | None = None, assets=None) -> Dataflow:
    """``ports`` default to the configured broker; ``assets`` default to the PostgreSQL registry cache."""
    ports = ports or KafkaPorts(settings)
    if assets is None:
        from sinks.asset_cache import AssetCache
        from vpp.assets import asset_from_row

        assets = AssetCache(settings.postgres_dsn, asset_from_row, refresh_s=settings.assets_refresh_s)
    metrics = FlowMetrics.for_flow("canonicalize")
    canonical_topic, dlq_topic = ports.topic("telemetry.canonical"), ports.topic("telemetry.dlq")

    flow = Dataflow("canonicalize")
    raw = ports.read(flow, "raw_in", ["telemetry.raw"])
    results = op.flat_map_batch("canonicalize", raw, partial(canonicalize_batch, assets, metrics, platform_clock=settings.platform_clock_check))
    accepted = op.flat_map_batch("accepted", results, accepted_only)
    rejected = op.flat_map_batch("rejected", results, rejected_only)
    horizon_ms = settings.dedup_horizon_s * 1000
    deduped = op.stateful_batch("dedup", accepted, partial(DedupBucket, horizon_ms=horizon_ms))
    canonical_out = op.flat_map_batch("encode_canonical", deduped, partial(encode_canonical, ports.serde, canonical_topic, metrics))
    dlq_out = op.flat_map_batch("encode_dlq", rejected, partial(encode_dead_letters, ports.serde, dlq_topic, metrics))
    ports.write("canonical_out", canonical_out)
    ports.write("dlq_out", dlq_out)
    return flow


__getattr__ = flow_from_environment(build_flow)
