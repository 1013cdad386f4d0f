"""The scalar reference model of a bucket's window close: one device at a time, as first written.

``flows.aggregate.devices`` does the same with arrays; the tests check that both give the same
records on random streams (the columns are the fast path, this is the readable statement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import add, itemgetter
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from flows.aggregate.logic import (
    BATTERY_W, CAPACITY_WH, DEVICE_ID, GRID_W, LOAD_W, REGION_PATH, SOC_PCT, SOLAR_W, TS, ZERO, RatedLimits,
    Reading, Summary, WindowParams, _late_only,
)

_POWERS = (BATTERY_W, SOLAR_W, LOAD_W, GRID_W)
_ts_of = itemgetter(TS)


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


