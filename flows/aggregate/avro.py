"""Avro encoding of ``fleet.aggregates`` records straight from summaries, without building a dict.

The aggregation flow writes about one record per reading (every device leaf
and every inner node, every window), so encoding is on its hot path:
fastavro's ``schemaless_writer`` over a dict costs ~9 us a record here, this
~2 us. The bytes are identical to ``vpp.serde.Serde.encode`` for the schema
in ``schemas/node_aggregate.avsc`` (a test compares them on generated
records); a change to that schema must change ``_FIELD_ORDER`` below, which
is checked against the schema at import.
"""

from __future__ import annotations

import json
import struct
from typing import Callable, Iterable, Sequence

import numpy as np

from flows.aggregate.logic import (
    BATTERY_MW,
    CAPACITY_MWH,
    CHARGE_MW,
    DISCHARGE_MW,
    ENERGY_MWH,
    ESTIMATED,
    GRID_MW,
    HEADROOM_MWH,
    KNOWN,
    LATE,
    LOAD_MW,
    REPORTING,
    SOC_CAPACITY_MWH,
    SOLAR_MW,
    STORED_MWH,
    Summary,
)
from sinks.messages import OutMessage, out_messages
from vpp.observability import FlowMetrics
from vpp.serde import schema_text

__all__ = ["NodeAggregateEncoder", "zigzag_varint", "encode_leaves", "encode_nodes"]

_FIELD_ORDER = ("node_path", "depth", "window_start", "window_end", "devices_known", "devices_reporting",
                "estimated_devices", "battery_w", "solar_w", "load_w", "grid_w", "energy_available_wh", "headroom_wh",
                "discharge_available_w", "charge_available_w", "capacity_wh", "soc_pct", "late")

_declared = tuple(f["name"] for f in json.loads(schema_text("node_aggregate"))["fields"])
if _declared != _FIELD_ORDER:  # pragma: no cover - guards a schema change
    raise ImportError(f"schemas/node_aggregate.avsc fields {_declared} changed: update flows/aggregate_avro.py")

_NINE_DOUBLES = struct.Struct("<9d").pack
_DOUBLE_COLUMNS = [BATTERY_MW, SOLAR_MW, LOAD_MW, GRID_MW, ENERGY_MWH, HEADROOM_MWH, DISCHARGE_MW, CHARGE_MW,
                   CAPACITY_MWH]
_ONE_DOUBLE = struct.Struct("<d").pack
_HEADER = struct.Struct(">bI").pack


def zigzag_varint(n: int) -> bytes:
    """Avro's int/long encoding: zig-zag, then base-128 little-endian varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(zigzag_varint(n) for n in range(4096))


def _int(n: int, small=_SMALL, len_small=len(_SMALL)) -> bytes:
    return small[n] if 0 <= n < len_small else zigzag_varint(n)


class NodeAggregateEncoder:
    """Confluent-framed Avro ``NodeAggregate`` values for one schema id and window length."""

    def __init__(self, schema_id: int, window_ms: int):
        self._header = _HEADER(0, schema_id)
        self._window_ms = window_ms
        self._window_cache: dict[int, bytes] = {}
        self._prefixes: dict[str, bytes] = {}  # node path -> header, path and depth bytes

    def _window(self, w: int) -> bytes:
        cached = self._window_cache.get(w)
        if cached is None:
            if len(self._window_cache) > 64:
                self._window_cache.clear()
            start = w * self._window_ms
            cached = self._window_cache[w] = zigzag_varint(start) + zigzag_varint(start + self._window_ms)
        return cached

    def encoder_for(self, w: int) -> Callable[[str, Summary], bytes]:
        """``encode(node_path, summary) -> bytes`` for window ``w``."""
        prefix_window = self._window(w)
        header = self._header

        def encode(node_path: str, s: Summary, _int=_int, pack9=_NINE_DOUBLES, pack1=_ONE_DOUBLE) -> bytes:
            path = node_path.encode()
            soc_cap = s[SOC_CAPACITY_MWH]
            return b"".join((
                header, _int(len(path)), path, _int(node_path.count("/") + 1), prefix_window,
                _int(s[KNOWN]), _int(s[REPORTING]), _int(s[ESTIMATED]),
                pack9(s[BATTERY_MW] / 1000, s[SOLAR_MW] / 1000, s[LOAD_MW] / 1000, s[GRID_MW] / 1000,
                      s[ENERGY_MWH] / 1000, s[HEADROOM_MWH] / 1000, s[DISCHARGE_MW] / 1000, s[CHARGE_MW] / 1000,
                      s[CAPACITY_MWH] / 1000),
                b"\x02" + pack1(100 * s[STORED_MWH] / soc_cap) if soc_cap else b"\x00",
                _int(s[LATE]),
            ))

        return encode

    def encode(self, node_path: str, w: int, summary: Summary) -> bytes:
        return self.encoder_for(w)(node_path, summary)

    def encode_many(self, w: int, node_paths: Sequence[str], summaries: np.ndarray) -> list[bytes]:
        """``encode`` of many nodes of window ``w`` at once (``summaries``: one int64 row per node).

        The same bytes as ``encode``: the doubles of all records are converted and packed in one go
        (the same integer divisions by 1000, exact while below 2**53 mW or mWh, 9 TW), and the bytes
        before the window (header, path, depth) are remembered per path, since the same nodes and
        devices come back every window.
        """
        n = len(node_paths)
        if n == 0:
            return []
        prefixes = self._prefixes
        if len(prefixes) > 1_000_000:
            prefixes.clear()
        window = self._window(w)
        header = self._header
        doubles = np.ascontiguousarray(summaries[:, _DOUBLE_COLUMNS] / 1000, "<f8").view(np.uint8).reshape(n, 72)
        counts = summaries[:, [KNOWN, REPORTING, ESTIMATED, LATE]]
        stored, soc_cap = summaries[:, STORED_MWH], summaries[:, SOC_CAPACITY_MWH]
        # rows the block cannot hold (a count of 64 or more: upper nodes; energies beyond exact doubles)
        general = ((counts < 0) | (counts >= 64)).any(axis=1) | (np.abs(stored) >= 2**53 // 100) | \
            (np.abs(soc_cap) >= 2**53)
        general_rows = np.flatnonzero(general).tolist()
        # one block per record: the three counts (one varint byte each below 64) and the nine doubles
        block = np.empty((n, 75), np.uint8)
        block[:, :3] = counts[:, :3] * 2  # (rows with larger counts are encoded the general way below)
        block[:, 3:] = doubles
        blocks = block.tobytes()
        has_soc = (soc_cap != 0).tolist()
        with np.errstate(invalid="ignore", divide="ignore"):  # both exact doubles: as Python's int / int
            soc = np.ascontiguousarray(100 * stored / soc_cap, "<f8").tobytes()
        late = counts[:, 3].tolist()
        small = _SMALL
        out = []
        for i in general_rows:
            late[i] = 0  # keeps the lookup below in range; the row is replaced after the loop
        for i, node_path in enumerate(node_paths):
            prefix = prefixes.get(node_path)
            if prefix is None:
                path = node_path.encode()
                prefix = prefixes[node_path] = b"".join((header, _int(len(path)), path, _int(node_path.count("/") + 1)))
            out.append(b"".join((prefix, window, blocks[i * 75:i * 75 + 75],
                                 b"\x02" + soc[i * 8:i * 8 + 8] if has_soc[i] else b"\x00", small[late[i]])))
        if general_rows:
            rows = summaries[general_rows].tolist()
            for i, row in zip(general_rows, rows):
                out[i] = self.encode(node_paths[i], w, row)
        return out


def encode_leaves(encoder: NodeAggregateEncoder, topic: str, window_ms: int, metrics: FlowMetrics,
                  items: Iterable[tuple]) -> list[OutMessage]:
    out = []
    for _, window, closed in items:
        paths = [f"{site}/{device}" for site, device in zip(closed.leaf_sites, closed.leaf_devices)]
        ts = window * window_ms
        out += out_messages(topic, paths, encoder.encode_many(window, paths, closed.leaf_summaries), ts)
    metrics.count_out(len(out), topic)
    return out


def encode_nodes(encoder: NodeAggregateEncoder, topic: str, window_ms: int, metrics: FlowMetrics,
                 items: Iterable[tuple[str, tuple]]) -> list[OutMessage]:
    out = []
    for _, (window, paths, summaries) in items:
        ts = window * window_ms
        out += out_messages(topic, paths, encoder.encode_many(window, paths, summaries), ts)
    metrics.count_out(len(out), topic)
    return out
