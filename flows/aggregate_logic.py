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
  business (``flows.aggregate``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from operator import add, itemgetter
from typing import Any, Iterable, Mapping, NamedTuple, Protocol, Sequence

__all__ = [
    "WindowParams",
    "Reading",
    "reading_of",
    "Summary",
    "SUMMARY_FIELDS",
    "ZERO",
    "merge",
    "merge_all",
    "time_weighted_means_mw",
    "device_summary",
    "DeviceState",
    "BucketState",
    "ingest",
    "close_window",
    "close_through",
    "roll_up",
    "ClosedWindow",
    "ShardState",
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
_POWERS = (BATTERY_W, SOLAR_W, LOAD_W, GRID_W)
_ts_of = itemgetter(TS)


def reading_of(record: Mapping[str, Any]) -> Reading:
    """The aggregation view of a decoded ``telemetry.canonical`` record."""
    return (record["ts"], record["battery_w"], record["solar_w"], record["load_w"], record["grid_w"],
            record["soc_pct"], record["capacity_wh"], record["region_path"], record["device_id"])


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
    """What a registry row gives aggregation (``flows.canonicalize_logic.Asset`` satisfies it)."""

    capacity_wh: float | None
    max_charge_w: float | None
    max_discharge_w: float | None
    reserve_pct: float | None


def time_weighted_means_mw(carry: Reading | None, readings: Sequence[Reading], window_start: int,
                           window_end: int) -> tuple[int, int, int, int]:
    """(battery, solar, load, grid) in mW: each reading holds until the next or the window end.

    ``readings`` are the window's, sorted by ts and without duplicates; ``carry`` (the previous reading)
    covers ``[window_start, first ts)``, else the mean starts at the first reading.
    """
    if carry is None:
        if len(readings) == 1:  # the common case: one value held to the end
            r = readings[0]
            return tuple(0 if r[f] is None else round(r[f] * 1000) for f in _POWERS)  # type: ignore[return-value]
        points: Sequence[Reading] = readings
        starts = [r[TS] for r in readings]
    elif len(readings) == 1:  # the common case with a carry: two spans
        r = readings[0]
        before, after = r[TS] - window_start, window_end - r[TS]
        out = []
        for f in _POWERS:
            a, b = carry[f], r[f]
            if a is None:
                out.append(0 if b is None else round(b * 1000))
            elif b is None:
                out.append(round(a * 1000) if before else 0)
            else:
                out.append(round((a * before + b * after) * 1000 / (before + after)))
        return tuple(out)  # type: ignore[return-value]
    else:
        points = [carry, *readings]
        starts = [window_start, *(r[TS] for r in readings)]
    ends = starts[1:]
    ends.append(window_end)
    spans = [e - s for s, e in zip(starts, ends)]
    out = []
    for f in _POWERS:
        num = 0.0
        den = 0
        for p, d in zip(points, spans):
            v = p[f]
            if v is not None:
                num += v * d
                den += d
        out.append(round(num * 1000 / den) if den else 0)
    return tuple(out)  # type: ignore[return-value]


def device_summary(powers_mw: tuple[int, int, int, int], soc_pct: float | None, capacity_wh: float | None,
                   rated: RatedLimits | None, *, reporting: bool, late: int = 0) -> Summary:
    """One known device's window summary."""
    if capacity_wh is None and rated is not None:
        capacity_wh = rated.capacity_wh
    cap_mwh = round(capacity_wh * 1000) if capacity_wh else 0
    if soc_pct is None or not capacity_wh:
        energy = headroom = stored = soc_cap = discharge = charge = 0
    else:
        reserve = (rated.reserve_pct or 0.0) if rated is not None else 0.0
        energy = round(max(0.0, soc_pct - reserve) * capacity_wh * 10)
        headroom = round(max(0.0, 100.0 - soc_pct) * capacity_wh * 10)
        stored = round(soc_pct * capacity_wh * 10)
        soc_cap = cap_mwh
        discharge = round((rated.max_discharge_w or 0.0) * 1000) if rated is not None and soc_pct > reserve else 0
        charge = round((rated.max_charge_w or 0.0) * 1000) if rated is not None and soc_pct < 100.0 else 0
    return (1, 1 if reporting else 0, 0 if reporting else 1, *powers_mw, energy, headroom, discharge, charge,
            cap_mwh, stored, soc_cap, late)


# -- one bucket of devices ------------------------------------------------------------------------

class DeviceState(NamedTuple):
    """What a bucket remembers of a device between windows."""

    last: Reading  # latest reading counted in a closed window: the carry
    soc_pct: float | None  # latest known SoC
    capacity_wh: float | None  # latest reported capacity
    counted_ts: tuple[int, ...]  # ts of readings counted lately (duplicate memory)
    leaf_site: str | None  # site path under which the device was last counted; None once zeroed out


@dataclass
class BucketState:
    """The devices of one bucket: open windows, last state per device, source watermarks.

    Owned by one stateful step and mutated in place by ``ingest`` / ``close_through``;
    the step snapshots a pickled copy.
    """

    bucket: int = -1
    closed: int | None = None  # id of the last closed window
    partition_max: dict[Any, int] = field(default_factory=dict)  # source partition -> robust max event ts
    watermark: int | None = None  # monotonic
    open: dict[int, dict[str, list[Reading]]] = field(default_factory=dict)  # window -> device -> readings
    devices: dict[str, DeviceState] = field(default_factory=dict)
    late: dict[str, tuple[int, str]] = field(default_factory=dict)  # device -> (late readings unreported, path)


def ingest(state: BucketState, readings: Iterable[Reading], params: WindowParams) -> tuple[int, int]:
    """Place readings in their open windows; returns (late, duplicates) among them."""
    window_ms = params.window_ms
    closed = state.closed
    open_windows = state.open
    late = dups = 0
    for r in readings:
        w = r[TS] // window_ms
        if closed is not None and w <= closed:
            device = r[DEVICE_ID]
            st = state.devices.get(device)
            if st is not None and r[TS] in st.counted_ts:
                dups += 1
                continue
            count, _ = state.late.get(device, (0, ""))
            state.late[device] = (count + 1, r[REGION_PATH])
            late += 1
            continue
        window = open_windows.get(w)
        if window is None:
            window = open_windows[w] = {}
        rs = window.get(r[DEVICE_ID])
        if rs is None:
            window[r[DEVICE_ID]] = [r]
        else:
            rs.append(r)
    return late, dups


def _sorted_unique(rs: list[Reading]) -> list[Reading]:
    if len(rs) == 1:
        return rs
    rs.sort(key=_ts_of)  # stable: the first copy of a (device, ts) is kept
    out = [rs[0]]
    for r in rs[1:]:
        if r[TS] != out[-1][TS]:
            out.append(r)
    return out


def close_window(state: BucketState, w: int, params: WindowParams,
                 rated: Mapping[str, RatedLimits]) -> list[tuple[str, str, Summary]]:
    """Close window ``w`` of a bucket: ``(site path, device_id, summary)`` of every device leaf to emit."""
    ws = w * params.window_ms
    we = ws + params.window_ms
    stale_before_start = ws - params.staleness_ms
    stale_before_end = we - params.staleness_ms
    forget_before = we - params.duplicate_memory_ms
    window = state.open.pop(w, {})
    devices = state.devices
    pending_late = state.late
    out: list[tuple[str, str, Summary]] = []
    gone: list[str] = []
    for device in (*devices.keys(), *(d for d in window if d not in devices)):
        st = devices.get(device)
        rs = window.get(device)
        late = 0
        if pending_late:
            late_entry = pending_late.pop(device, None)
            if late_entry is not None:
                late = late_entry[0]
        if rs:
            rs = _sorted_unique(rs)
            carry = st.last if st is not None and st.last[TS] >= stale_before_start else None
            soc = capacity = None
            for r in reversed(rs):
                if soc is None:
                    soc = r[SOC_PCT]
                if capacity is None:
                    capacity = r[CAPACITY_WH]
            if st is not None:
                if soc is None and carry is not None:
                    soc = st.soc_pct
                if capacity is None:
                    capacity = st.capacity_wh
            last = rs[-1]
            site = last[REGION_PATH]
            summary = device_summary(time_weighted_means_mw(carry, rs, ws, we), soc, capacity, rated.get(device),
                                     reporting=True, late=late)
            counted = tuple(t for t in st.counted_ts if t >= forget_before) if st is not None else ()
            if st is not None and st.leaf_site is not None and st.leaf_site != site:
                out.append((st.leaf_site, device, ZERO))  # moved: the old leaf counts it no more
            devices[device] = DeviceState(last, soc, capacity, counted + tuple(r[TS] for r in rs), site)
            out.append((site, device, summary))
        elif st is not None and st.last[TS] >= stale_before_end:
            last = st.last
            powers = tuple(0 if last[f] is None else round(last[f] * 1000) for f in _POWERS)
            summary = device_summary(powers, st.soc_pct, st.capacity_wh, rated.get(device), reporting=False, late=late)
            site = last[REGION_PATH]
            if st.leaf_site != site:  # only after a zero-out; a carry never changes site
                devices[device] = st._replace(leaf_site=site)
            out.append((site, device, summary))
        else:
            # stale, or never counted: out of every sum; one zero record for the leaf it was counted under
            if st is not None and st.leaf_site is not None:
                out.append((st.leaf_site, device, _late_only(late)))
                late = 0
            if late:
                out.append((late_entry[1] if st is None else st.last[REGION_PATH], device, _late_only(late)))
            if st is not None:
                gone.append(device)
    for device in gone:
        del devices[device]
    for device, (late, site) in pending_late.items():  # late readings of devices this bucket does not know
        out.append((site, device, _late_only(late)))
    pending_late.clear()
    return out


def roll_up(leaves: Iterable[tuple[str, str, Summary]]) -> dict[str, Summary]:
    """Summaries of every inner node above the given device leaves (sites and up), level by level.

    Each leaf is merged once into its site, each node once into its parent: the work is the
    number of nodes touched, not devices times depth.
    """
    by_depth: dict[int, dict[str, Summary]] = {}
    for site, _, summary in leaves:
        depth = site.count("/") + 1
        level = by_depth.get(depth)
        if level is None:
            level = by_depth[depth] = {}
        prev = level.get(site)
        level[site] = summary if prev is None else tuple(map(add, prev, summary))
    out: dict[str, Summary] = {}
    for depth in range(max(by_depth, default=0), 0, -1):
        level = by_depth.get(depth, {})
        out.update(level)
        if depth == 1:
            break
        parents = by_depth.get(depth - 1)
        if parents is None:
            parents = by_depth[depth - 1] = {}
        for path, summary in level.items():
            parent = path.rpartition("/")[0]
            prev = parents.get(parent)
            parents[parent] = summary if prev is None else tuple(map(add, prev, summary))
    return out


class ClosedWindow(NamedTuple):
    window: int
    leaves: list[tuple[str, str, Summary]]  # (site path, device_id, summary)
    nodes: dict[str, Summary]  # this bucket's part of every inner node


def close_through(state: BucketState, target: int, params: WindowParams,
                  rated: Mapping[str, RatedLimits]) -> list[ClosedWindow]:
    """Close every window up to ``target`` (inclusive) in order; windows with nothing to say are skipped."""
    closed = state.closed
    if closed is not None and target <= closed:
        return []
    out: list[ClosedWindow] = []
    w = closed + 1 if closed is not None else min(state.open, default=target + 1)
    while w <= target:
        if not state.devices and not state.late:
            # nothing carried forward: jump to the next window holding readings
            nxt = min((k for k in state.open if k >= w), default=None)
            if nxt is None or nxt > target:
                break
            w = nxt
        leaves = close_window(state, w, params, rated)
        if leaves:
            out.append(ClosedWindow(w, leaves, roll_up(leaves)))
        w += 1
    state.closed = target
    return out


# -- merging buckets' parts of a node (the shards) ----------------------------------------------------

@dataclass
class ShardState:
    """Parts of inner nodes from every bucket, until every bucket has closed the window."""

    frontiers: dict[int, int] = field(default_factory=dict)  # bucket -> last window it closed
    pending: dict[int, dict[str, Summary]] = field(default_factory=dict)  # window -> node -> merged summary


def shard_add(state: ShardState, bucket: int, frontier: int, windows: Mapping[int, Iterable[tuple[str, Summary]]]) -> None:
    for w, nodes in windows.items():
        merged = state.pending.get(w)
        if merged is None:
            merged = state.pending[w] = {}
        for path, summary in nodes:
            prev = merged.get(path)
            merged[path] = summary if prev is None else tuple(map(add, prev, summary))
    if frontier > state.frontiers.get(bucket, frontier - 1):
        state.frontiers[bucket] = frontier


def shard_close_ready(state: ShardState, buckets: int) -> list[tuple[int, list[tuple[str, Summary]]]]:
    """Windows every bucket has closed: ``(window, [(node path, summary)] sorted by path)``, oldest first."""
    if len(state.frontiers) < buckets or not state.pending:
        return []
    low = min(state.frontiers.values())
    ready = sorted(w for w in state.pending if w <= low)
    return [(w, sorted(state.pending.pop(w).items())) for w in ready]


def shard_flush(state: ShardState) -> list[tuple[int, list[tuple[str, Summary]]]]:
    """Every pending window (end of input)."""
    ready = sorted(state.pending)
    return [(w, sorted(state.pending.pop(w).items())) for w in ready]


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


def stable_index(text: str, n: int) -> int:
    """A stable hash of ``text`` into ``range(n)`` (crc32: the same on every process and run)."""
    return zlib.crc32(text.encode()) % n
