"""One bucket of devices, kept in columns: placing readings in open windows and closing a window.

The rules are the spec's and are written out in ``flows.aggregate.logic``;
this module applies them to every device of a bucket at once with numpy.
A bucket holds a few thousand devices, and at fleet scale a window close
touches every one of them (reporting, carried forward or going stale), so
the per-device work is array arithmetic, not a Python loop: that is what
keeps aggregation within reach of the cost of decoding its input.

State per device is a *slot* (an index into the columns): its latest
counted reading's time and powers, its last known SoC and capacity, the
site it is counted under, and the registry limits seen for it. Readings
wait in their open window (``OpenWindow``) as the tuples the flow built,
and every ``CHUNK_ROWS`` of them become a column chunk (``ReadingChunk``,
with the site id of each reading): the conversion and the lookups are done
as readings arrive, not in the burst at a window's close, and a snapshot
pickles arrays rather than a tuple per reading. A closed window keeps only
``(device_id, ts)`` pairs for a while, so that a late copy of a counted
reading is recognised as a duplicate and not counted as late.

All arithmetic that reaches a record is integer (mW, mWh, counts), with the
float steps in the same order as a scalar loop would do them (a device's
time-weighted sum adds its carried span first, then its readings in time
order), so the results do not depend on how devices are bucketed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from flows.aggregate.logic import (
    DEVICE_ID,
    REGION_PATH,
    SUMMARY_FIELDS,
    TS,
    ZERO,
    RatedLimits,
    Reading,
    Summary,
    WindowParams,
    _late_only,
    stable_index,
)

__all__ = ["DeviceTable", "NodeIndex", "BucketState", "ClosedWindow", "OpenWindow", "ReadingChunk", "ingest",
           "close_window", "close_through"]

_NEVER = np.iinfo(np.int64).min // 4  # last_ts of a slot that has counted nothing
_WIDTH = len(SUMMARY_FIELDS)
_LATE_COL = _WIDTH - 1


class ReadingChunk(NamedTuple):
    """Readings in columns (a row per reading, in arrival order); NaN stands for a null value."""

    ts: np.ndarray  # int64 epoch ms
    powers: np.ndarray  # (rows, 4) float: battery, solar, load, grid W
    soc: np.ndarray  # float %
    capacity: np.ndarray  # float Wh
    paths: Sequence[str]  # region path (the site the reading names)
    devices: Sequence[str]
    sites: np.ndarray  # id of each path in the bucket's NodeIndex


def _chunk_of(readings: Sequence[Reading], nodes: NodeIndex) -> ReadingChunk:
    """The columns of reading tuples (``flows.aggregate.logic.Reading``), site ids from ``nodes``."""
    ts_t, b_t, s_t, l_t, g_t, soc_t, cap_t, path_t, dev_t = zip(*readings)
    return ReadingChunk(np.array(ts_t, np.int64), np.array((b_t, s_t, l_t, g_t), float).T, np.array(soc_t, float),
                        np.array(cap_t, float), path_t, dev_t, nodes.ids(path_t))


def _concat(chunks: Sequence[ReadingChunk]) -> ReadingChunk:
    if len(chunks) == 1:
        return chunks[0]
    return ReadingChunk(np.concatenate([c.ts for c in chunks]), np.concatenate([c.powers for c in chunks]),
                        np.concatenate([c.soc for c in chunks]), np.concatenate([c.capacity for c in chunks]),
                        list(chain.from_iterable(c.paths for c in chunks)),
                        list(chain.from_iterable(c.devices for c in chunks)), np.concatenate([c.sites for c in chunks]))


class DeviceTable:
    """Columns of a bucket's devices, one slot per device; freed slots are reused."""

    def __init__(self) -> None:
        self.slot_of: dict[str, int] = {}
        self.ids: list[str | None] = []  # slot -> device id, None when free
        self.free: list[int] = []
        self.site = np.zeros(0, np.int64)  # NodeIndex id of the site it is counted under (its latest reading's), -1 none
        self.last_ts = np.zeros(0, np.int64)
        self.last_pw = np.zeros((0, 4))  # battery, solar, load, grid of the latest counted reading; NaN = null
        self.soc = np.zeros(0)  # NaN = unknown
        self.capacity = np.zeros(0)  # reported capacity, NaN = unknown
        # registry limits per slot, refreshed when the registry's object for the device changes
        self.rated_obj: list[Any] = []
        self.rated = np.zeros((0, 5))  # has, capacity (NaN), max_charge, max_discharge, reserve (0 for null)
        self.rated_generation: int | None = None  # registry generation the limits were read at (None: unknown)
        self.unrated: list[int] = []  # slots given out since the limits were read

    def __len__(self) -> int:
        return len(self.slot_of)

    def _grow(self, needed: int) -> None:
        size = len(self.last_ts)
        if needed <= size:
            return
        new = max(needed, 2 * size, 64)
        self.site = np.concatenate((self.site, np.full(new - size, -1, np.int64)))
        self.last_ts = np.concatenate((self.last_ts, np.full(new - size, _NEVER, np.int64)))
        self.last_pw = np.concatenate((self.last_pw, np.full((new - size, 4), np.nan)))
        self.soc = np.concatenate((self.soc, np.full(new - size, np.nan)))
        self.capacity = np.concatenate((self.capacity, np.full(new - size, np.nan)))
        self.rated = np.concatenate((self.rated, np.zeros((new - size, 5))))

    def slots_for(self, device_ids: Sequence[str]) -> np.ndarray:
        """The slot of each device, giving new devices a fresh slot (nothing counted yet)."""
        get = self.slot_of.get
        slots = list(map(get, device_ids, repeat(-1, len(device_ids))))
        if -1 in slots:
            for i, d in enumerate(device_ids):
                if slots[i] != -1:
                    continue
                s = get(d)
                if s is None:
                    if self.free:
                        s = self.free.pop()
                        self.ids[s] = d
                    else:
                        s = len(self.ids)
                        self.ids.append(d)
                        self.rated_obj.append(None)
                        self._grow(s + 1)
                    self.slot_of[d] = s
                    self.unrated.append(s)
                slots[i] = s
        return np.array(slots, np.int64)

    def release(self, slots: Iterable[int]) -> None:
        for s in slots:
            del self.slot_of[self.ids[s]]
            self.ids[s] = self.rated_obj[s] = None
            self.site[s] = -1
            self.last_ts[s] = _NEVER
            self.last_pw[s] = np.nan
            self.soc[s] = self.capacity[s] = np.nan
            self.rated[s] = 0.0
            self.free.append(s)

    def live_mask(self) -> np.ndarray:
        n = len(self.ids)
        mask = np.zeros(n, bool)
        if self.slot_of:
            mask[np.fromiter(self.slot_of.values(), np.int64, len(self.slot_of))] = True
        return mask

    def refresh_rated(self, rated: Mapping[str, RatedLimits], generation: int | None = None) -> None:
        """Registry limits of every device, re-read for the devices whose registry entry changed.

        ``generation`` (the registry's change counter, if it keeps one): while it stays the same only
        the slots given out since are read; without one every device is looked up again.
        """
        if generation is not None and generation == self.rated_generation:
            slots = self.unrated
        else:
            slots = range(len(self.ids))
        self.unrated = []
        self.rated_generation = generation
        ids, cached = self.ids, self.rated_obj
        for s in slots:
            d = ids[s]
            obj = None if d is None else rated.get(d)
            if obj is not cached[s]:
                cached[s] = obj
                if obj is None:
                    self.rated[s] = 0.0
                else:
                    self.rated[s] = (1.0, np.nan if obj.capacity_wh is None else obj.capacity_wh,
                                     obj.max_charge_w or 0.0, obj.max_discharge_w or 0.0, obj.reserve_pct or 0.0)

    def __getstate__(self) -> dict:
        n = len(self.ids)
        state = dict(self.__dict__)
        state["rated_obj"] = [None] * n  # registry objects are not state: re-read after a restore
        state["rated_generation"] = None
        state["unrated"] = []
        for name in ("site", "last_ts", "last_pw", "soc", "capacity"):
            state[name] = state[name][:n].copy()
        state["rated"] = np.zeros((n, 5))
        return state


class NodeIndex:
    """Every inner node a bucket has counted a device under: an id per path, its parent and depth."""

    def __init__(self) -> None:
        self.id_of: dict[str, int] = {}
        self.paths: list[str] = []
        self.parent: list[int] = []  # -1 for a root
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []  # rebuilt when nodes are added
        self._dirty = False
        self._shards = np.zeros(0, np.int64)

    def ids(self, paths: Sequence[str]) -> np.ndarray:
        get = self.id_of.get
        out = list(map(get, paths, repeat(-1, len(paths))))
        if -1 in out:
            for i, p in enumerate(paths):
                if out[i] == -1:
                    out[i] = self._add(p)
        return np.array(out, np.int64)

    def _add(self, path: str) -> int:
        i = self.id_of.get(path)
        if i is None:
            parent = self._add(path.rpartition("/")[0]) if "/" in path else -1
            i = self.id_of[path] = len(self.paths)
            self.paths.append(path)
            self.parent.append(parent)
            self._dirty = True
        return i

    def levels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(ids, parent ids)`` per depth, deepest first, roots left out."""
        if self._dirty:
            depth = np.array([p.count("/") + 1 for p in self.paths])
            parent = np.array(self.parent, np.int64)
            self._levels = [(ids, parent[ids]) for ids in (np.flatnonzero(depth == d) for d in np.unique(depth)[::-1] if d > 1)]
            self._dirty = False
        return self._levels

    def shards(self, n: int) -> np.ndarray:
        """The shard (``stable_index(path, n)``) of every node, by id."""
        cached = self._shards
        if len(cached) < len(self.paths):
            extra = [stable_index(p, n) for p in self.paths[len(cached):]]
            cached = self._shards = np.concatenate((cached, np.array(extra, np.int64)))
        return cached

    def roll_up(self, site_ids: np.ndarray, summaries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every inner node above the given leaves (sites and up) with the sum of the leaves under it.

        Level by level: each leaf is added once into its site, each node once into its parent.
        A node is returned when at least one leaf is under it, even if all of them are zero.
        """
        sums = np.zeros((len(self.paths), _WIDTH + 1), np.int64)  # last column: leaves under the node
        np.add.at(sums, site_ids, np.hstack((summaries, np.ones((len(summaries), 1), np.int64))))
        for ids, parents in self.levels():
            touched = sums[ids, _WIDTH] > 0
            np.add.at(sums, parents[touched], sums[ids[touched]])
        nodes = np.flatnonzero(sums[:, _WIDTH] > 0)
        return nodes, sums[nodes, :_WIDTH]


@dataclass
class BucketState:
    """The devices of one bucket: open windows, columns per device, source watermarks.

    Owned by one stateful step and mutated in place by ``ingest`` / ``close_through``;
    the step snapshots a pickled copy.
    """

    bucket: int = -1
    closed: int | None = None  # id of the last closed window
    partition_max: dict[Any, int] = field(default_factory=dict)  # source partition -> robust max event ts
    event_max: dict[Any, int] = field(default_factory=dict)  # source partition -> max event ts (closes all at the end)
    watermark: int | None = None  # monotonic
    open: dict[int, OpenWindow] = field(default_factory=dict)  # window -> its readings
    devices: DeviceTable = field(default_factory=DeviceTable)
    nodes: NodeIndex = field(default_factory=NodeIndex)
    late: dict[str, tuple[int, str]] = field(default_factory=dict)  # device -> (late readings unreported, path)
    #: closed window -> its counted (device_id, ts) pairs, kept for ``duplicate_memory_ms``
    counted: dict[int, Any] = field(default_factory=dict)

    def __setstate__(self, state: dict) -> None:
        # snapshots written before OpenWindow hold a list of reading tuples per window
        state["open"] = {w: OpenWindow(list(rows)) if isinstance(rows, list) else rows
                         for w, rows in state.get("open", {}).items()}
        state.setdefault("event_max", dict(state.get("partition_max", {})))  # snapshots before event_max
        self.__dict__.update(state)


#: Rows an open window keeps as tuples before turning them into a column chunk: enough to pay numpy's
#: per-call cost over many readings, few enough that the close finds most of them already in columns.
CHUNK_ROWS = 256
#: Chunks an open window keeps before merging them into one (so a close concatenates few arrays).
MERGE_CHUNKS = 16


class OpenWindow:
    """The readings of one open window of a bucket, in arrival order: column chunks, then recent tuples."""

    __slots__ = ("chunks", "rows")

    def __init__(self, rows: list[Reading] | None = None) -> None:
        self.chunks: list[ReadingChunk] = []
        self.rows: list[Reading] = rows if rows is not None else []

    def __len__(self) -> int:
        return sum(len(c.ts) for c in self.chunks) + len(self.rows)

    def settle(self, nodes: "NodeIndex") -> None:
        """Turn the tuples into a chunk (site ids from ``nodes``), merging chunks when they pile up."""
        if self.rows:
            self.chunks.append(_chunk_of(self.rows, nodes))
            self.rows = []
        if len(self.chunks) > MERGE_CHUNKS:
            self.chunks = [_concat(self.chunks)]

    def columns(self, nodes: "NodeIndex") -> ReadingChunk:
        self.settle(nodes)
        return _concat(self.chunks)

    def __getstate__(self) -> tuple:
        return self.chunks, self.rows

    def __setstate__(self, state: tuple) -> None:
        self.chunks, self.rows = state


def ingest(state: BucketState, readings: Iterable[Reading], params: WindowParams) -> tuple[int, int]:
    """Place readings in their open windows; returns (late, duplicates) among them."""
    window_ms = params.window_ms
    closed = state.closed
    open_windows = state.open
    late = dups = 0
    current = -1
    rows: list = []
    touched: set[OpenWindow] = set()
    for r in readings:
        w = r[TS] // window_ms
        if w != current:
            if closed is not None and w <= closed:
                if _is_counted(state, w, r[DEVICE_ID], r[TS]):
                    dups += 1
                else:
                    count, _ = state.late.get(r[DEVICE_ID], (0, ""))
                    state.late[r[DEVICE_ID]] = (count + 1, r[REGION_PATH])
                    late += 1
                continue
            current = w
            window = open_windows.get(w)
            if window is None:
                window = open_windows[w] = OpenWindow()
            rows = window.rows
            touched.add(window)
        rows.append(r)
    for window in touched:
        if len(window.rows) >= CHUNK_ROWS:
            window.settle(state.nodes)
    return late, dups


def _is_counted(state: BucketState, w: int, device: str, ts: int) -> bool:
    counted = state.counted.get(w)
    if counted is None:
        return False
    if not isinstance(counted, set):  # built on the first late reading of the window
        devices, times = counted
        counted = state.counted[w] = set(zip(devices, times.tolist() if isinstance(times, np.ndarray) else times))
    return (device, ts) in counted


class ClosedWindow(NamedTuple):
    """One bucket's output for a window: device leaves and its part of every inner node above them."""

    window: int
    leaf_sites: list[str]
    leaf_devices: list[str]
    leaf_summaries: np.ndarray  # (leaves, len(SUMMARY_FIELDS)) int64
    node_ids: np.ndarray  # in the bucket's NodeIndex
    node_paths: list[str]
    node_summaries: np.ndarray
    node_is_site: np.ndarray  # bool per node: devices are counted directly under it

    @property
    def leaves(self) -> list[tuple[str, str, Summary]]:
        return list(zip(self.leaf_sites, self.leaf_devices, map(tuple, self.leaf_summaries.tolist())))

    @property
    def nodes(self) -> dict[str, Summary]:
        return dict(zip(self.node_paths, map(tuple, self.node_summaries.tolist())))


def _per_device(c: ReadingChunk, table: DeviceTable):
    """The window's readings (columns), sorted by (slot, ts), without repeated (device, ts)."""
    slots = table.slots_for(c.devices)
    order = np.lexsort((c.ts, slots))  # stable: the first copy of a (device, ts) comes first
    sl, t = slots[order], c.ts[order]
    keep = np.ones(len(order), bool)
    keep[1:] = (sl[1:] != sl[:-1]) | (t[1:] != t[:-1])
    idx = order[keep]
    return slots[idx], c.ts[idx], c.powers[idx], c.soc[idx], c.capacity[idx], c.sites[idx], (c.devices, c.ts)


def _means_mw(group: np.ndarray, n_groups: int, values: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Time-weighted mean in mW per group and power column: sum(v * span) / sum(span) over known values.

    ``group`` numbers the points; each group's points come in time order (a device's carry first), so
    the float sum adds them in that order. A single known value is returned as it is, none gives 0.
    """
    out = np.zeros((n_groups, values.shape[1]), np.int64)
    known = ~np.isnan(values)
    for k in range(values.shape[1]):
        ok = known[:, k]
        v = np.where(ok, values[:, k], 0.0)
        num = np.bincount(group, np.where(ok, v * spans, 0.0), n_groups)
        den = np.bincount(group, np.where(ok, spans, 0), n_groups)
        count = np.bincount(group, ok, n_groups)
        single = np.bincount(group, v, n_groups)  # the value itself when only one is known
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count == 1, single * 1000, num * 1000 / den)
        out[:, k] = np.where(den > 0, np.rint(np.where(den > 0, mean, 0.0)), 0)
    return out


def _summaries(powers_mw: np.ndarray, soc: np.ndarray, capacity: np.ndarray, rated: np.ndarray,
               reporting: np.ndarray) -> np.ndarray:
    """Device summaries (``SUMMARY_FIELDS`` columns, late 0) from powers, SoC, capacity and registry limits."""
    has_rated = rated[:, 0] > 0
    cap = np.where(np.isnan(capacity) & has_rated, rated[:, 1], capacity)
    cap_known = ~np.isnan(cap) & (cap != 0)
    cap0 = np.where(cap_known, cap, 0.0)
    cap_mwh = np.rint(cap0 * 1000).astype(np.int64)
    has = cap_known & ~np.isnan(soc)
    soc0 = np.where(has, soc, 0.0)
    capx = np.where(has, cap0, 0.0)
    reserve = np.where(has_rated, rated[:, 4], 0.0)
    out = np.zeros((len(soc), _WIDTH), np.int64)
    out[:, 0] = 1
    out[:, 1] = reporting
    out[:, 2] = 1 - reporting
    out[:, 3:7] = powers_mw
    out[:, 7] = np.rint(np.maximum(0.0, soc0 - reserve) * capx * 10)
    out[:, 8] = np.rint(np.maximum(0.0, 100.0 - soc0) * capx * 10)
    out[:, 9] = np.where(has & has_rated & (soc0 > reserve), np.rint(rated[:, 3] * 1000), 0)
    out[:, 10] = np.where(has & has_rated & (soc0 < 100.0), np.rint(rated[:, 2] * 1000), 0)
    out[:, 11] = cap_mwh
    out[:, 12] = np.rint(soc0 * capx * 10)
    out[:, 13] = np.where(has, cap_mwh, 0)
    return out


def _count_readings(state: BucketState, w: int, readings: ReadingChunk, params: WindowParams,
                    moved: list[tuple[int, str, Summary]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The devices that reported in window ``w``: ``(slots, powers mW, SoC, capacity)``; their columns updated.

    A device whose latest reading names another site than the one it was counted under gets a zero
    record for the old leaf in ``moved``.
    """
    ws = w * params.window_ms
    we = ws + params.window_ms
    table = state.devices
    slots, ts, powers, socs, caps, sites, counted = _per_device(readings, table)
    state.counted[w] = counted
    n = len(slots)
    first = np.ones(n, bool)
    first[1:] = slots[1:] != slots[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], n) - 1
    u = slots[starts]
    m = len(u)
    group = np.cumsum(first) - 1
    nxt = np.empty(n, np.int64)  # each reading holds until the next of its device, or the window end
    nxt[:-1] = ts[1:]
    nxt[ends] = we
    carry_ok = table.last_ts[u] >= ws - params.staleness_ms
    carry_span = np.where(carry_ok, ts[starts] - ws, 0)
    carry_pw = np.where(carry_ok[:, None], table.last_pw[u], np.nan)
    pw_mw = _means_mw(np.concatenate((np.arange(m), group)), m, np.concatenate((carry_pw, powers)),
                      np.concatenate((carry_span, nxt - ts)))
    positions = np.arange(n)
    soc_idx = np.maximum.reduceat(np.where(np.isnan(socs), -1, positions), starts)  # last known in the window
    cap_idx = np.maximum.reduceat(np.where(np.isnan(caps), -1, positions), starts)
    soc_w = np.where(soc_idx >= 0, socs[soc_idx], np.where(carry_ok, table.soc[u], np.nan))
    cap_w = np.where(cap_idx >= 0, caps[cap_idx], table.capacity[u])
    new_sites = sites[ends]
    old_sites = table.site[u]
    for i in np.flatnonzero((old_sites >= 0) & (old_sites != new_sites)).tolist():
        moved.append((int(old_sites[i]), table.ids[u[i]], ZERO))  # the old leaf counts it no more
    table.site[u] = new_sites
    table.last_ts[u] = ts[ends]
    table.last_pw[u] = powers[ends]
    table.soc[u] = soc_w
    table.capacity[u] = cap_w
    return u, pw_mw, soc_w, cap_w


def close_window(state: BucketState, w: int, params: WindowParams, rated: Mapping[str, RatedLimits],
                 rated_generation: int | None = None) -> ClosedWindow | None:
    """Close window ``w`` of a bucket: every device leaf to emit, and the bucket's part of the nodes above.

    ``rated``: registry limits by device id; ``rated_generation``: its change counter, if it keeps one.
    """
    we = (w + 1) * params.window_ms
    table = state.devices
    window = state.open.pop(w, None)
    extra: list[tuple[int, str, Summary]] = []  # (site id, device, summary): zero and late-only leaves, few
    if window is not None and len(window):
        u, pw_mw, soc_w, cap_w = _count_readings(state, w, window.columns(state.nodes), params, extra)
    else:
        u = np.zeros(0, np.int64)
        pw_mw = np.zeros((0, 4), np.int64)
        soc_w = cap_w = np.zeros(0)
    for old_w in [k for k in state.counted if (k + 1) * params.window_ms <= we - params.duplicate_memory_ms]:
        del state.counted[old_w]

    table.refresh_rated(rated, rated_generation)
    live = table.live_mask()
    silent = live.copy()
    silent[u] = False
    known = table.last_ts[: len(live)] >= we - params.staleness_ms
    carried = np.flatnonzero(silent & known)
    stale = np.flatnonzero(silent & ~known)
    carried_pw = table.last_pw[carried]
    carried_mw = np.where(np.isnan(carried_pw), 0, np.rint(np.where(np.isnan(carried_pw), 0.0, carried_pw) * 1000))

    leaf_slots = np.concatenate((u, carried))
    summaries = _summaries(np.concatenate((pw_mw, carried_mw.astype(np.int64))),
                           np.concatenate((soc_w, table.soc[carried])),
                           np.concatenate((cap_w, table.capacity[carried])),
                           table.rated[leaf_slots], np.concatenate((np.ones(len(u), np.int64),
                                                                    np.zeros(len(carried), np.int64))))
    site_ids = table.site[leaf_slots]
    devices = list(map(table.ids.__getitem__, leaf_slots.tolist()))

    pending = state.late
    if pending:
        row_of = {d: i for i, d in enumerate(devices)}
        for device in list(pending):
            i = row_of.get(device)
            if i is not None:
                summaries[i, _LATE_COL] = pending.pop(device)[0]
    for s in stale.tolist():  # stale: out of every sum; one zero record for the leaf it was counted under
        device = table.ids[s]
        late = pending.pop(device, (0, ""))[0]
        extra.append((int(table.site[s]), device, _late_only(late)))
    table.release(stale.tolist())
    for device, (late, site) in pending.items():  # late readings of devices this bucket does not know
        extra.append((int(state.nodes.ids([site])[0]), device, _late_only(late)))
    pending.clear()

    if extra:
        site_ids = np.concatenate((site_ids, np.array([e[0] for e in extra], np.int64)))
        devices = devices + [e[1] for e in extra]
        summaries = np.vstack((summaries, np.array([e[2] for e in extra], np.int64)))
    if not devices:
        return None
    node_ids, node_summaries = state.nodes.roll_up(site_ids, summaries)
    path_of = state.nodes.paths.__getitem__
    sites = list(map(path_of, site_ids.tolist()))
    is_site = np.zeros(len(state.nodes.paths), bool)
    is_site[site_ids] = True
    return ClosedWindow(w, sites, devices, summaries, node_ids, list(map(path_of, node_ids.tolist())), node_summaries,
                        is_site[node_ids])


def close_through(state: BucketState, target: int, params: WindowParams,
                  rated: Mapping[str, RatedLimits], rated_generation: int | None = None) -> list[ClosedWindow]:
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
        result = close_window(state, w, params, rated, rated_generation)
        if result is not None:
            out.append(result)
        w += 1
    state.closed = target
    return out
