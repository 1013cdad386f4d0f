"""The columns of a device bucket: readings as column chunks, a device table, and an index of nodes.

See ``flows.aggregate.devices`` for how a bucket uses them.
"""

from __future__ import annotations

from itertools import chain, repeat
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from flows.aggregate.logic import SUMMARY_FIELDS, RatedLimits, Reading, stable_index

__all__ = ["ReadingChunk", "DeviceTable", "NodeIndex"]

_NEVER = np.iinfo(np.int64).min // 4  # last_ts of a slot that has counted nothing
_WIDTH = len(SUMMARY_FIELDS)


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
