"""What dispatch knows of each device: its latest reading joined with its registry row, in columns.

Pure (numpy, no I/O). Rows are appended as devices appear and never removed, so a row index is a
stable device handle; masks of the devices under each node in use are kept up to date row by row,
so finding a command's devices does not rescan 100,000 paths.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from flows.dispatch.logic import DeviceArrays, node_covers

__all__ = ["DeviceReading", "DeviceTable"]


class DeviceReading(NamedTuple):
    """What dispatch needs of one canonical reading, joined with the device's registry row."""

    device_id: str
    region_path: str
    ts_ms: int
    soc_pct: float | None
    capacity_wh: float
    reserve_pct: float
    max_charge_w: float
    max_discharge_w: float
    #: the programs the device takes part in at ``ts_ms``, with the reserve (% of capacity) each holds back
    programs: tuple[tuple[str, float], ...] = (("market", 0.0), ("peak_shaving", 0.0))
    #: its lifecycle lets dispatch use it (``active``); a suspended or commissioning device is measured only
    dispatchable: bool = True


_FLOAT_COLUMNS = ("soc_pct", "capacity_wh", "reserve_pct", "max_charge_w", "max_discharge_w")


class DeviceTable:
    """Columnar latest state per device; rows are never removed, so indices are stable."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.paths: list[str] = []
        self.n = 0
        size = 64
        self.ts_ms = np.zeros(size, dtype=np.int64)
        self.last_seen_ms = np.zeros(size, dtype=np.int64)
        self.dispatchable = np.zeros(size, dtype=bool)
        #: program -> per device the reserve it holds in that program (NaN: not enrolled)
        self.program_reserve: dict[str, np.ndarray] = {}
        for name in _FLOAT_COLUMNS:
            setattr(self, name, np.full(size, np.nan))
        self._index: dict[str, int] = {}
        self._masks: dict[str, np.ndarray] = {}  # node -> devices under it, kept up to date row by row

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_index"]  # rebuilt from ids: smaller snapshots
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "program_reserve" not in state:  # a snapshot from before programs: the flag was peak shaving's
            enrolled = state.pop("enrolled")
            state["program_reserve"] = {"peak_shaving": np.where(enrolled, 0.0, np.nan),
                                        "market": np.zeros(len(enrolled))}
            state["dispatchable"] = np.ones(len(enrolled), dtype=bool)
        self.__dict__.update(state)
        self._index = {device_id: i for i, device_id in enumerate(self.ids)}

    def _grow(self) -> None:
        size = 2 * len(self.ts_ms)
        for name in ("ts_ms", "last_seen_ms", "dispatchable") + _FLOAT_COLUMNS:
            setattr(self, name, _grown(getattr(self, name), size))
        for program, reserve in self.program_reserve.items():
            self.program_reserve[program] = _grown(reserve, size)
        for node, mask in self._masks.items():
            grown = np.zeros(size, dtype=bool)
            grown[: len(mask)] = mask
            self._masks[node] = grown

    def index_of(self, device_id: str) -> int | None:
        return self._index.get(device_id)

    def upsert(self, r: DeviceReading, seen_ms: int) -> None:
        i = self._index.get(r.device_id)
        if i is None:
            if self.n == len(self.ts_ms):
                self._grow()
            i = self._index[r.device_id] = self.n
            self.n += 1
            self.ids.append(r.device_id)
            self.paths.append(r.region_path)
            self._remask(i)
        elif r.ts_ms < self.ts_ms[i]:
            self.last_seen_ms[i] = seen_ms  # an older reading still says the device is alive
            return
        elif self.paths[i] != r.region_path:  # the device moved: it leaves its old nodes
            self.paths[i] = r.region_path
            self._remask(i)
        self.ts_ms[i] = r.ts_ms
        self.last_seen_ms[i] = seen_ms
        if r.soc_pct is not None:
            self.soc_pct[i] = r.soc_pct
        self.capacity_wh[i] = r.capacity_wh
        self.reserve_pct[i] = r.reserve_pct
        self.max_charge_w[i] = r.max_charge_w
        self.max_discharge_w[i] = r.max_discharge_w
        self.dispatchable[i] = r.dispatchable
        held = dict(r.programs)
        for program in held.keys() - self.program_reserve.keys():
            self.program_reserve[program] = np.full(len(self.ts_ms), np.nan)
        for program, reserve in self.program_reserve.items():
            reserve[i] = held.get(program, np.nan)

    def remove(self, device_id: str) -> bool:
        """A decommissioned device: out of every pool from now on (its row stays: indices are stable)."""
        i = self._index.get(device_id)
        if i is None or not self.dispatchable[i] and self.last_seen_ms[i] == _GONE_MS:
            return False
        self.dispatchable[i] = False
        self.last_seen_ms[i] = _GONE_MS
        return True

    def enrolled(self, program: str) -> np.ndarray:
        """Mask of the devices enrolled in ``program`` (length ``n``; none when nobody is)."""
        reserve = self.program_reserve.get(program)
        return np.zeros(self.n, dtype=bool) if reserve is None else np.isfinite(reserve[: self.n])

    def _remask(self, i: int) -> None:
        for node, mask in self._masks.items():
            mask[i] = node_covers(node, self.paths[i], self.ids[i])

    def under(self, node: str) -> np.ndarray:
        """Mask of the devices under ``node`` (length ``n``)."""
        mask = self._masks.get(node)
        if mask is None:
            mask = np.zeros(len(self.ts_ms), dtype=bool)
            mask[: self.n] = [node_covers(node, p, d) for p, d in zip(self.paths, self.ids)]
            self._masks[node] = mask
        return mask[: self.n]

    def forget_node(self, node: str) -> None:
        self._masks.pop(node, None)

    def arrays(self, idx: np.ndarray, program: str | None = None) -> DeviceArrays:
        """The devices' arrays for an allocation; for a program's command, each keeps the larger of its own
        reserve and the one the program holds."""
        reserve = self.reserve_pct[idx]
        held = self.program_reserve.get(program) if program else None
        if held is not None:
            reserve = np.fmax(reserve, held[idx])
        return DeviceArrays([self.ids[i] for i in idx], self.soc_pct[idx], self.capacity_wh[idx], reserve,
                            self.max_charge_w[idx], self.max_discharge_w[idx], self.last_seen_ms[idx],
                            np.ones(len(idx), dtype=bool))


_GONE_MS = np.iinfo(np.int64).min // 2  # "last seen" of a decommissioned device: stale at any time


def _grown(old: np.ndarray, size: int) -> np.ndarray:
    new = np.full(size, np.nan) if old.dtype == np.float64 else np.zeros(size, dtype=old.dtype)
    new[: len(old)] = old
    return new
