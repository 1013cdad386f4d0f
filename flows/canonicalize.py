"""Flow ``canonicalize``: ``telemetry.raw`` -> ``telemetry.canonical`` + ``telemetry.dlq``.

The declaration only: parsing, scrubbing and dedup live in
``flows.canonicalize_logic``. The same ``build_flow`` runs against Kafka
(``vpp run canonicalize``) and over a dump (``vpp replay canonicalize``).

At-least-once: after a crash bytewax resumes from the last snapshot and
re-reads the raw input since then. A re-produced canonical reading is
byte-identical to its first copy (canonicalization is a pure function of the
raw bytes and the registry row), dedup state is restored with the snapshot,
and every consumer absorbs a copy: the time-series point is the same point,
PostgreSQL upserts, aggregation ignores a (device_id, ts) it has counted.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterable, Mapping

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow

from flows.canonicalize_logic import Asset, Rejection, SourcePosition, canonicalize, dedup_step
from sinks.messages import OutMessage
from sinks.ports import KafkaPorts, Ports
from vpp.observability import FlowMetrics

__all__ = ["build_flow", "OUTPUT_TOPICS", "StaticAssets", "static_assets", "asset_from_row", "flow"]

OUTPUT_TOPICS = ("telemetry.canonical", "telemetry.dlq")


def asset_from_row(row: Mapping[str, Any]) -> Asset:
    """The enrichment view of an asset-registry row (database row or CSV asset)."""
    return Asset(device_id=row["device_id"], site_id=row["site_id"], region_path=row["region_path"],
                 timezone=row["timezone"], capacity_wh=float(row["capacity_wh"]),
                 max_charge_w=float(row["max_charge_w"]), max_discharge_w=float(row["max_discharge_w"]),
                 reserve_pct=float(row["reserve_pct"]))


class StaticAssets:
    """A fixed registry (replay from a CSV): the same interface as ``vpp.asset_cache.AssetCache``."""

    def __init__(self, assets: Mapping[str, Asset]):
        self.assets = dict(assets)

    def refresh_if_due(self, *, missing: bool = False) -> int:
        return 0


def static_assets(csv_path: str | Path) -> StaticAssets:
    from dataclasses import asdict

    from vpp.assets import load_assets_csv

    return StaticAssets({device_id: asset_from_row(asdict(a)) for device_id, a in load_assets_csv(Path(csv_path)).items()})


def canonicalize_batch(registry, metrics: FlowMetrics, msgs: list[KafkaSourceMessage]) -> list[Any]:
    """Canonical dicts and Rejections, one per message, in order."""
    registry.refresh_if_due()
    assets = registry.assets
    results = [canonicalize(m.value, SourcePosition(m.topic, m.partition, m.offset), assets) for m in msgs]
    unknown = [i for i, r in enumerate(results) if type(r) is Rejection and r.reason == "unknown_device"]
    if unknown and registry.refresh_if_due(missing=True):
        # a device registered a moment ago: look again before rejecting it
        for i in unknown:
            m = msgs[i]
            results[i] = canonicalize(m.value, SourcePosition(m.topic, m.partition, m.offset), registry.assets)
    metrics.count_in(len(msgs))
    return results


def is_canonical(result: Any) -> bool:
    return type(result) is not Rejection


def device_key(reading: Mapping[str, Any]) -> str:
    return reading["device_id"]


def encode_canonical(serde, topic: str, metrics: FlowMetrics, items: list[tuple[str, tuple[Any, bool]]]) -> list[OutMessage]:
    fresh = [reading for _, (reading, duplicate) in items if not duplicate]
    metrics.count_duplicates(len(items) - len(fresh))
    values = serde.encode_many(topic, fresh)
    metrics.count_out(len(fresh), topic)
    return [OutMessage(topic, r["device_id"], v, r["ts"]) for r, v in zip(fresh, values)]


def encode_dead_letters(serde, topic: str, metrics: FlowMetrics, rejections: Iterable[Rejection]) -> list[OutMessage]:
    out = []
    for r in rejections:
        metrics.count_rejected(r.reason)
        out.append(OutMessage(topic, r.device_id, serde.encode(topic, r.to_record())))
    return out


def build_flow(settings, *, ports: Ports | None = None, assets=None) -> Dataflow:
    """``ports`` default to the configured broker; ``assets`` default to the PostgreSQL registry cache."""
    ports = ports or KafkaPorts(settings)
    if assets is None:
        from vpp.asset_cache import AssetCache

        assets = AssetCache(settings.postgres_dsn, asset_from_row, refresh_s=settings.assets_refresh_s)
    metrics = FlowMetrics.for_flow("canonicalize")
    canonical_topic, dlq_topic = ports.topic("telemetry.canonical"), ports.topic("telemetry.dlq")

    flow = Dataflow("canonicalize")
    raw = ports.read(flow, "raw_in", ["telemetry.raw"])
    results = op.flat_map_batch("canonicalize", raw, partial(canonicalize_batch, assets, metrics))
    accepted = op.branch("accepted", results, is_canonical)
    by_device = op.key_on("by_device", accepted.trues, device_key)
    deduped = op.stateful_map("dedup", by_device, partial(dedup_step, horizon_ms=settings.dedup_horizon_s * 1000))
    canonical_out = op.flat_map_batch("encode_canonical", deduped, partial(encode_canonical, ports.serde, canonical_topic, metrics))
    dlq_out = op.flat_map_batch("encode_dlq", accepted.falses, partial(encode_dead_letters, ports.serde, dlq_topic, metrics))
    ports.write("canonical_out", canonical_out)
    ports.write("dlq_out", dlq_out)
    return flow


def __getattr__(name: str):
    # `python -m bytewax.run flows.canonicalize:flow` builds from the environment, on first access only
    if name == "flow":
        from vpp.config import Settings

        return build_flow(Settings.load())
    raise AttributeError(name)
