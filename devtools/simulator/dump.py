"""Dumps in the envelope ``kcat -C -J`` prints (spec/telemetry.md section 6), without a broker.

Each line is ``{"topic","partition","offset","tstype","ts","broker","key","payload"}``.
Partitions follow Kafka's default (Java) partitioner: murmur2 of the key,
positive, modulo the topic's partition count. The publisher configures
librdkafka's ``murmur2_random`` partitioner, so a dump and a live topic put a
device on the same partition. Offsets count from 0 per partition.

Values that are not valid UTF-8 (the ``garbage`` fault): kcat prints the raw
bytes into its JSON string, which JSON cannot carry. ``payload`` holds them
decoded with ``errors="replace"`` (each bad byte becomes U+FFFD, the text kcat
users see) and ``payload_b64`` the exact bytes (``sinks.dumps.payload_fields``),
which replay reads: a dead letter keeps the original bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import orjson

from sinks.dumps import payload_fields
from devtools.simulator.stream import Record, Simulation, SimulationConfig
from devtools.simulator.tree import Fleet

__all__ = ["murmur2", "partition_for", "dump_lines", "write_dump", "simulate_to_dump", "default_assets_path", "DUMP_TOPIC"]

#: The platform's (unprefixed) topic name written in dumps: replay works on platform names.
DUMP_TOPIC = "telemetry.raw"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = n4 * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed message: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def dump_lines(records: Iterable[Record], partitions: int, topic: str = DUMP_TOPIC) -> Iterable[bytes]:
    """One kcat -J line (no newline) per record, offsets per partition from 0."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    offsets = [0] * partitions
    for rec in records:
        p = partition_for(rec.key, partitions)
        line = {
            "topic": topic,
            "partition": p,
            "offset": offsets[p],
            "tstype": "create",
            "ts": rec.timestamp_ms,
            "broker": 0,
            "key": rec.key.decode("utf-8", errors="replace"),
            **payload_fields(rec.value),
        }
        offsets[p] += 1
        yield orjson.dumps(line)


def write_dump(path: str | os.PathLike[str], records: Iterable[Record], partitions: int, topic: str = DUMP_TOPIC) -> int:
    """Write records as a kcat -J JSON Lines file; returns the number of lines."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("wb") as f:
        for line in dump_lines(records, partitions, topic):
            f.write(line)
            f.write(b"\n")
            n += 1
    return n


def default_assets_path(dump_path: str | os.PathLike[str]) -> Path:
    """The assets CSV written next to a dump: ``raw.jsonl`` -> ``raw.assets.csv``."""
    p = Path(dump_path)
    return p.with_name(p.stem + ".assets.csv") if p.suffix else p.with_name(p.name + ".assets.csv")


def simulate_to_dump(
    path: str | os.PathLike[str],
    fleet: Fleet,
    config: SimulationConfig,
    duration_s: float,
    partitions: int,
    assets_out: str | os.PathLike[str] | None = None,
) -> tuple[int, Path, Simulation]:
    """Simulate ``duration_s`` of event time into a dump plus its assets CSV.

    Readings delayed past the end (late, out of order) are included, as if
    the recording had waited for them. Returns (lines, assets path, simulation).
    """
    from vpp.assets import write_assets_csv

    sim = Simulation(fleet, config)
    lines = write_dump(path, (e.record for e in sim.iter_run(duration_s)), partitions)
    assets_path = write_assets_csv(assets_out or default_assets_path(path), fleet.assets())
    return lines, assets_path, sim
