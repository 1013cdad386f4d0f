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
from typing import Any, Collection, Iterable, Mapping, NamedTuple

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
)

from flows.aggregate.tables import DeviceTable, NodeIndex, ReadingChunk, _chunk_of, _concat  # noqa: E402

__all__ = ["DeviceTable", "NodeIndex", "BucketState", "ClosedWindow", "OpenWindow", "ReadingChunk", "ingest",
           "close_window", "close_through"]

_WIDTH = len(SUMMARY_FIELDS)
_LATE_COL = _WIDTH - 1


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
                 rated_generation: int | None = None, removed: Collection[str] = ()) -> ClosedWindow | None:
    """Close window ``w`` of a bucket: every device leaf to emit, and the bucket's part of the nodes above.

    ``rated``: registry limits by device id; ``rated_generation``: its change counter, if it keeps one;
    ``removed``: decommissioned devices, out of the tree from this window on as if they were stale (their
    readings of the window itself still count: they were taken while the device was in service).
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
    if removed:
        slot_of = table.slot_of
        gone = [slot_of[d] for d in removed if d in slot_of] if len(removed) < len(slot_of) else \
            [s for d, s in slot_of.items() if d in removed]
        known[gone] = False
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
                  rated: Mapping[str, RatedLimits], rated_generation: int | None = None,
                  removed: Collection[str] = ()) -> list[ClosedWindow]:
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
        result = close_window(state, w, params, rated, rated_generation, removed)
        if result is not None:
            out.append(result)
        w += 1
    state.closed = target
    return out
