"""Pure logic of the aggregation flow: device window summaries, their merge and roll-up (spec fleet.md section 1).

No I/O, clock or environment. Everything a window needs is an integer:
powers in milliwatts, energies in milliwatt-hours, counts. A node's summary
is the element-wise sum of its children's, so merging is associative and
commutative and a node equals the sum of its children EXACTLY; the record
divides by 1000 only when it is written (``round(x * 1000)`` of a record's
``battery_w`` gives the integer back).

Readings of the spec where it leaves room:

- Windows are ``[k * window_ms, (k + 1) * window_ms)`` from the epoch; window
  id ``k = ts // window_ms``.
- Time-weighted mean: a reading's value holds from its ``ts`` until the next
  reading of the device or the window end. The span from the window start to
  the first reading is back-filled from the device's previous reading (the
  *carry*) when there is one within the staleness horizon; otherwise the mean
  is over ``[first ts, window end)`` only (a device that just joined is not
  averaged with zeros). A null power is unknown, not zero: its span is left
  out of that field's mean, and a field unknown all window contributes 0.
- SoC and capacity come from the last reading in the window with a value
  (else the device's last known value); capacity falls back to the registry.
  A device with unknown SoC adds its capacity to ``capacity_wh`` but nothing
  to the energies, to ``soc_pct``'s weights nor to the available powers.
- Available power: the registry's ``max_discharge_w`` when SoC > reserve,
  ``max_charge_w`` when SoC < 100, for every known device (reporting or
  carried forward).
- Known: the device's latest reading is at most ``staleness_ms`` before the
  window END. A known device without a reading in the window is carried
  forward (its last powers held all window) and counted in
  ``estimated_devices``. When a device goes stale, or moves to another site
  (a reading with a new ``region_path``: the whole window it is in counts
  under the new path), its old leaf gets one all-zero record so that the
  latest state of the old path no longer counts it; ancestors that are left
  with no device get an all-zero record the same way, then nothing.
- Late: a reading whose window was closed before it arrived. It changes no
  power or energy, and is counted in the ``late`` field of the next record
  of its device's leaf (and so of every ancestor). A copy of a reading that
  was already counted (same device and ts, within ``duplicate_memory_ms``) is
  a duplicate, not late, and changes nothing.
- Watermark: per source partition, the robust maximum event time seen (the
  90th percentile of each input batch, so a few devices with clocks running
  ahead cannot drag it forward), minus the lateness; the flow takes the
  minimum over the input partitions, so a partition that is behind (a
  partition-ordered dump, a consumer catching up) holds the windows open
  instead of making its readings late. Idle partitions are the flow's
  business (``flows.aggregate.flow``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter
from typing import Any, Iterable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from flows._common.buckets import stable_index

__all__ = [
    "WindowParams",
    "Reading",
    "reading_of",
    "Summary",
    "SUMMARY_FIELDS",
    "ZERO",
    "merge",
    "merge_all",
    "RatedLimits",
    "ShardState",
    "ShardWindow",
    "shard_add",
    "shard_close_ready",
    "shard_flush",
    "to_record",
    "node_depth",
    "robust_max",
    "watermark_ms",
    "stable_index",
]


@dataclass(frozen=True)
class WindowParams:
    window_ms: int = 10_000
    lateness_ms: int = 5_000
    staleness_ms: int = 60_000
    #: how long a counted reading's ts is remembered, so a late copy of it is a duplicate and not "late"
    duplicate_memory_ms: int = 60_000

    @classmethod
    def from_settings(cls, settings) -> "WindowParams":
        return cls(window_ms=settings.window_s * 1000, lateness_ms=settings.lateness_s * 1000,
                   staleness_ms=settings.staleness_s * 1000, duplicate_memory_ms=settings.staleness_s * 1000)


# -- readings -----------------------------------------------------------------------------------

#: A canonical reading reduced to what aggregation needs (a tuple: one is built per reading).
Reading = tuple  # (ts, battery_w, solar_w, load_w, grid_w, soc_pct, capacity_wh, region_path, device_id)
TS, BATTERY_W, SOLAR_W, LOAD_W, GRID_W, SOC_PCT, CAPACITY_WH, REGION_PATH, DEVICE_ID = range(9)


#: ``reading_of(record)``: the aggregation view of a decoded ``telemetry.canonical`` record (one C call).
reading_of = itemgetter("ts", "battery_w", "solar_w", "load_w", "grid_w", "soc_pct", "capacity_wh", "region_path",
                        "device_id")


# -- summaries ----------------------------------------------------------------------------------

SUMMARY_FIELDS = ("devices_known", "devices_reporting", "estimated_devices", "battery_mw", "solar_mw", "load_mw",
                  "grid_mw", "energy_available_mwh", "headroom_mwh", "discharge_available_mw", "charge_available_mw",
                  "capacity_mwh", "stored_mwh", "soc_capacity_mwh", "late")
(KNOWN, REPORTING, ESTIMATED, BATTERY_MW, SOLAR_MW, LOAD_MW, GRID_MW, ENERGY_MWH, HEADROOM_MWH, DISCHARGE_MW,
 CHARGE_MW, CAPACITY_MWH, STORED_MWH, SOC_CAPACITY_MWH, LATE) = range(len(SUMMARY_FIELDS))

#: One node's (or device's) window: a tuple of ints named by SUMMARY_FIELDS. ``stored_mwh`` and
#: ``soc_capacity_mwh`` (capacity of devices with a known SoC) give ``soc_pct`` = 100 * stored / capacity.
Summary = tuple
ZERO: Summary = (0,) * len(SUMMARY_FIELDS)


def merge(a: Summary, b: Summary) -> Summary:
    """The summary of the union of two disjoint sets of devices (element-wise integer sum)."""
    return tuple(map(add, a, b))


def merge_all(summaries: Iterable[Summary]) -> Summary:
    out = ZERO
    for s in summaries:
        out = tuple(map(add, out, s))
    return out


def _late_only(late: int) -> Summary:
    return ZERO[:-1] + (late,)


class RatedLimits(Protocol):
    """What a registry row gives aggregation (``flows.canonicalize.logic.Asset`` satisfies it)."""

    capacity_wh: float | None
    max_charge_w: float | None
    max_discharge_w: float | None
    reserve_pct: float | None


# -- merging buckets' parts of a node (the shards) ----------------------------------------------------

@dataclass
class ShardState:
    """Parts of the inner nodes of one shard from every bucket, until every bucket has closed the window.

    Columns: a row per node path the shard has seen; per pending window an int64 array of the summed
    parts, its last column the number of parts (a node is emitted when at least one part came).
    """

    frontiers: dict[int, int] = field(default_factory=dict)  # bucket -> last window it closed
    row_of: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    pending: dict[int, np.ndarray] = field(default_factory=dict)  # window -> (rows, len(SUMMARY_FIELDS) + 1)
    is_site: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per row: a bucket counted devices under it

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShardState) and (self.frontiers, self.row_of, self.paths) == \
            (other.frontiers, other.row_of, other.paths) and np.array_equal(self.is_site, other.is_site) and \
            self.pending.keys() == other.pending.keys() and \
            all(np.array_equal(a, other.pending[w]) for w, a in self.pending.items())

    def __setstate__(self, state: dict) -> None:
        state.setdefault("is_site", np.zeros(len(state.get("paths", ())), bool))  # snapshots from before the flag
        self.__dict__.update(state)


class ShardWindow(NamedTuple):
    """A complete window of a shard's nodes, sorted by path."""

    window: int
    paths: list[str]
    summaries: np.ndarray
    is_site: np.ndarray  # bool per node


def _rows(state: ShardState, paths: Sequence[str]) -> np.ndarray:
    get = state.row_of.get
    rows = list(map(get, paths, repeat(-1, len(paths))))
    if -1 in rows:
        for i, path in enumerate(paths):
            if rows[i] == -1:
                row = get(path)
                if row is None:
                    row = state.row_of[path] = len(state.paths)
                    state.paths.append(path)
                rows[i] = row
        if len(state.is_site) < len(state.paths):
            state.is_site = np.concatenate((state.is_site, np.zeros(len(state.paths) - len(state.is_site), bool)))
    return np.array(rows, np.int64)


def shard_add(state: ShardState, bucket: int, frontier: int,
              windows: Mapping[int, tuple[Sequence[str], np.ndarray, np.ndarray]]) -> None:
    """Add one bucket's parts and note how far it has closed.

    ``windows``: ``{window: (node paths, summaries, is_site)}``; ``is_site`` (bool per node) marks the
    nodes the bucket counted devices directly under.
    """
    width = len(SUMMARY_FIELDS)
    for w, (paths, summaries, is_site) in windows.items():
        if not len(paths):
            continue
        rows = _rows(state, paths)
        state.is_site[rows[is_site]] = True
        merged = state.pending.get(w)
        if merged is None or len(merged) < len(state.paths):
            grown = np.zeros((max(64, 2 * len(state.paths)), width + 1), np.int64)
            if merged is not None:
                grown[:len(merged)] = merged
            merged = state.pending[w] = grown
        np.add.at(merged, rows, np.hstack((summaries, np.ones((len(rows), 1), np.int64))))
    if frontier > state.frontiers.get(bucket, frontier - 1):
        state.frontiers[bucket] = frontier


def _emit(state: ShardState, w: int) -> ShardWindow:
    merged = state.pending.pop(w)
    rows = np.flatnonzero(merged[:, -1] > 0).tolist()
    rows.sort(key=state.paths.__getitem__)
    return ShardWindow(w, [state.paths[r] for r in rows], merged[rows, :-1], state.is_site[rows])


def shard_close_ready(state: ShardState, buckets: int) -> list[ShardWindow]:
    """Windows every bucket has closed (node paths sorted, their summaries), oldest first."""
    if len(state.frontiers) < buckets or not state.pending:
        return []
    low = min(state.frontiers.values())
    return [_emit(state, w) for w in sorted(w for w in state.pending if w <= low)]


def shard_flush(state: ShardState) -> list[ShardWindow]:
    """Every pending window (end of input)."""
    return [_emit(state, w) for w in sorted(state.pending)]


# -- records ------------------------------------------------------------------------------------------

def node_depth(path: str) -> int:
    return path.count("/") + 1


def to_record(node_path: str, window: int, summary: Summary, window_ms: int) -> dict[str, Any]:
    """The ``fleet.aggregates`` record (Avro field names; timestamps epoch ms)."""
    s = summary
    return {
        "node_path": node_path, "depth": node_depth(node_path),
        "window_start": window * window_ms, "window_end": (window + 1) * window_ms,
        "devices_known": s[KNOWN], "devices_reporting": s[REPORTING], "estimated_devices": s[ESTIMATED],
        "battery_w": s[BATTERY_MW] / 1000, "solar_w": s[SOLAR_MW] / 1000, "load_w": s[LOAD_MW] / 1000,
        "grid_w": s[GRID_MW] / 1000, "energy_available_wh": s[ENERGY_MWH] / 1000,
        "headroom_wh": s[HEADROOM_MWH] / 1000, "discharge_available_w": s[DISCHARGE_MW] / 1000,
        "charge_available_w": s[CHARGE_MW] / 1000, "capacity_wh": s[CAPACITY_MWH] / 1000,
        "soc_pct": 100 * s[STORED_MWH] / s[SOC_CAPACITY_MWH] if s[SOC_CAPACITY_MWH] else None,
        "late": s[LATE],
    }


# -- watermarks -----------------------------------------------------------------------------------------

#: A batch's watermark candidate is this quantile of its event times, not the maximum.
ROBUST_QUANTILE = 0.9


def robust_max(ts: Sequence[int]) -> int:
    """The 90th percentile of a batch's event times: a device whose clock runs ahead moves nothing."""
    if len(ts) == 1:
        return ts[0]
    return sorted(ts)[int(ROBUST_QUANTILE * (len(ts) - 1))]


def watermark_ms(partition_max: Mapping[Any, int], lateness_ms: int, *, expected: Iterable[Any] | None = None,
                 idle: Iterable[Any] = (), idle_advance_ms: int = 0) -> int | None:
    """Event time up to which every window may close, or None while waiting for a partition.

    The minimum over active partitions of their max event time, minus the lateness. An expected
    partition never seen (and not idle) holds it back. When every partition is idle, the maximum
    plus ``idle_advance_ms`` (wall time since the input went idle) takes over.
    """
    idle = frozenset(idle)
    if expected is not None and any(p not in partition_max and p not in idle for p in expected):
        return None
    active = [t for p, t in partition_max.items() if p not in idle]
    if active:
        return min(active) - lateness_ms
    if partition_max:
        return max(partition_max.values()) - lateness_ms + idle_advance_ms
    return None
