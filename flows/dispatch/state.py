"""The dispatch state machine of one fleet tree: latest device state, active commands, set points.

Pure: the caller hands in readings (already joined with the asset registry), commands (with
whether their node is registered) and the time; records to emit come back in an ``Emitted``.
``flows.dispatch.flow`` wraps it in a bytewax StatefulBatchLogic, keyed by the tree's root segment.

Time is event time: the clock follows the readings' timestamps (robustly: see ``_observe``),
never the wall clock, so the same input in the same order gives the same set points. The Kafka
adapter additionally pushes the clock forward with the wall clock (``advance``) so expiry and
staleness happen without new input.

Lifecycle of a command: rejected at arrival (bad period, unknown node) or kept pending until
``start``; at start it is *accepted* and allocated over the devices it owns (a device belongs to
the newest active command whose node covers it); *reallocated* when a device it uses goes stale
or leaves, a device joins, or a newer command takes some of its devices; *superseded* when a newer
command covers its whole node; *expired* at ``end``. Device set points are emitted as a diff:
only devices whose set point changes, and a release (0 W) for a device no command uses any more.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from flows.dispatch.devices import DeviceReading, DeviceTable
from flows.dispatch.logic import allocate_setpoints, normalize_node_path, validate_command

__all__ = ["DeviceReading", "DeviceTable", "Command", "Emitted", "DispatchState", "PEAK_SHAVING_PROGRAM"]

#: A command with a ``program`` (peak shaving's, the autobidder's ``market``) uses only the devices enrolled in it
#: then, each holding back the reserve the program keeps; a command without one (an operator's) any active device.
PEAK_SHAVING_PROGRAM = "peak_shaving"
_SEEN_IDS_HORIZON_MS = 24 * 3600 * 1000
_JUMP_QUORUM_SHARE = 0.05
_JUMP_QUORUM_MIN = 3


@dataclass
class Command:
    """A command past validation: pending until ``start_ms``, then active with its current allocation."""

    command_id: str
    node_path: str
    target_w: float
    start_ms: int
    end_ms: int
    issued_by: str
    program: str | None
    seq: int
    pool: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alloc_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alloc_w: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def status(self, state: str, at_ms: int, reason: str | None = None) -> dict[str, Any]:
        allocated = round(float(self.alloc_w.sum()), 3) + 0.0  # milliwatts: the set points' sum within 1 W
        return {"command_id": self.command_id, "node_path": self.node_path, "state": state,
                "requested_w": float(self.target_w), "allocated_w": allocated,
                "shortfall_w": round(max(0.0, abs(self.target_w) - abs(allocated)), 3), "devices": int(np.count_nonzero(self.alloc_w)),
                "at": int(at_ms), "reason": reason}


@dataclass
class Emitted:
    """Records produced by one call: ``device.commands``, ``dispatch.status``, and commands as received."""

    setpoints: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.setpoints or self.statuses or self.commands)


def _within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent + "/")


class DispatchState:
    """Everything dispatch knows about one tree; picklable (``dumps``/``loads`` for snapshots)."""

    def __init__(self, *, window_ms: int = 10_000, staleness_ms: int = 60_000, max_lead_ms: int = 30_000,
                 resend_ms: int = 0):
        self.window_ms, self.staleness_ms, self.max_lead_ms = window_ms, staleness_ms, max_lead_ms
        #: > 0: a device's unchanged set point is sent again once it is this old (a gateway that restarted or
        #: missed a message converges), with its first start, so stores keyed by (command, device, start) upsert
        self.resend_ms = resend_ms
        self.table = DeviceTable()
        self.clock_ms: int | None = None
        self.next_check_ms: int | None = None
        self.pending: list[Command] = []
        self.active: list[Command] = []
        self.seen_ids: dict[str, int] = {}
        self.seq = 0
        #: The set point each device row follows as last emitted: the command's seq (-1: none) and watts.
        self.current_seq = np.zeros(0, dtype=np.int64)
        self.current_w = np.zeros(0)
        self.current_start = np.zeros(0, dtype=np.int64)  # start of the set point each row follows
        self.sent_ms = np.zeros(0, dtype=np.int64)  # when it was last sent
        self._ahead: dict[str, int] = {}

    def __setstate__(self, state: dict) -> None:  # snapshots from before set points were re-sent
        self.__dict__.update({"resend_ms": 0, "current_start": np.zeros(0, dtype=np.int64),
                              "sent_ms": np.zeros(0, dtype=np.int64), **state})

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(data: bytes) -> "DispatchState":
        return pickle.loads(data)

    # -- time --------------------------------------------------------------------------
    def next_deadline_ms(self) -> int | None:
        """The next event time at which something happens without input (a check, a start, an end)."""
        times = [c.start_ms for c in self.pending] + [c.end_ms for c in self.active]
        if self.next_check_ms is not None:
            times.append(self.next_check_ms)
        return min(times) if times else None

    def _observe(self, device_id: str, ts_ms: int) -> None:
        # A reading moves the clock forward by at most max_lead_ms: a device whose clock runs ahead
        # (canonicalize accepts up to 300 s) must not make the whole fleet look stale. A real jump
        # (a gap in the stream) is taken once enough distinct devices agree on it.
        clock = self.clock_ms
        if ts_ms <= clock:
            return
        if ts_ms - clock <= self.max_lead_ms:
            self.clock_ms = ts_ms
            return
        self._ahead[device_id] = ts_ms
        if len(self._ahead) >= _JUMP_QUORUM_MIN:
            fresh = int(np.count_nonzero(self.table.last_seen_ms[: self.table.n] >= clock - self.staleness_ms))
            if len(self._ahead) >= max(_JUMP_QUORUM_MIN, _JUMP_QUORUM_SHARE * fresh):
                self.clock_ms = min(self._ahead.values())
                self._ahead.clear()

    def advance(self, now_ms: int, out: Emitted) -> None:
        """Move the clock to ``now_ms`` (never back) and do what is due: expiries, starts, checks."""
        if self.clock_ms is None:
            return  # nothing known yet: time starts with the first reading
        self.clock_ms = now = max(self.clock_ms, now_ms)
        removed: dict[int, tuple[Command, int]] = {}
        changed = False
        for cmd in [c for c in self.active if c.end_ms <= now]:
            self.active.remove(cmd)
            out.statuses.append(cmd.status("expired", cmd.end_ms, "its period ended"))
            removed[cmd.seq] = (cmd, cmd.end_ms)
            changed = True
        for cmd in sorted((c for c in self.pending if c.start_ms <= now), key=lambda c: (c.start_ms, c.seq)):
            self.pending.remove(cmd)
            if cmd.end_ms <= now:
                out.statuses.append(cmd.status("expired", cmd.end_ms, "its period passed before it could start"))
            else:
                self._activate(cmd, now, removed, out)
            changed = True
        due = self.next_check_ms is not None and now >= self.next_check_ms
        if changed or due:
            self._rebalance(now, out)
            self._commit(now, removed, out)
        if due or self.next_check_ms is None:
            self.next_check_ms = (now // self.window_ms + 1) * self.window_ms
        if len(self.seen_ids) > 1000:
            self.seen_ids = {k: end for k, end in self.seen_ids.items() if end > now - _SEEN_IDS_HORIZON_MS}

    # -- input -------------------------------------------------------------------------
    def on_readings(self, readings: Iterable[DeviceReading], out: Emitted) -> None:
        readings = list(readings)
        if not readings:
            return
        if self.clock_ms is None:  # start from the median of the first readings, not from one skewed device
            self.clock_ms = int(np.median([r.ts_ms for r in readings]))
            self.next_check_ms = (self.clock_ms // self.window_ms + 1) * self.window_ms
        deadline = self.next_deadline_ms()
        upsert, observe = self.table.upsert, self._observe
        for r in readings:
            observe(r.device_id, r.ts_ms)
            if deadline is not None and self.clock_ms >= deadline:
                self.advance(self.clock_ms, out)  # due work happens at the reading that crosses it: batching-independent
                deadline = self.next_deadline_ms()
            upsert(r, self.clock_ms)

    def on_command(self, record: dict[str, Any], node_known: bool, out: Emitted, *, issued_ms: int | None = None) -> None:
        """Take a ``dispatch.commands`` record; ``node_known``: some registered device lies under its node.

        ``issued_ms`` (the command message's Kafka timestamp) moves event time forward like a reading does: a
        command issued after the last reading is taken at its own time, in a replay as live, and not only
        when the next reading comes (a dump ending with it gave no set point and no status at all).
        """
        command_id = str(record["command_id"])
        if command_id in self.seen_ids:
            return  # a resent command with the same id is the same command
        if self.clock_ms is not None:
            self.advance(max(self.clock_ms, issued_ms or 0), out)
            now = self.clock_ms
        else:
            now = issued_ms or int(record["start"])
        node = normalize_node_path(str(record.get("node_path") or ""))
        out.commands.append({**record, "node_path": node, "received_at": now})
        cmd = Command(command_id, node, float(record.get("target_w") or 0.0), int(record["start"]), int(record["end"]),
                      str(record.get("issued_by") or ""), record.get("program"), self.seq)
        self.seq += 1
        self.seen_ids[command_id] = cmd.end_ms
        reason = validate_command(record, now)
        if reason is None and not node_known:
            reason = f"unknown node {node!r}: no registered device lies under it"
        if reason is not None:
            out.statuses.append(cmd.status("rejected", now, reason))
            return
        self.pending.append(cmd)
        self.advance(now, out)  # starts now if its start has come

    def on_removed(self, device_ids: Iterable[str], out: Emitted) -> None:
        """Devices decommissioned: out of every pool now, their shares moved to the others (and released)."""
        if not [d for d in device_ids if self.table.remove(d)] or self.clock_ms is None:
            return
        now = self.clock_ms
        self._rebalance(now, out)
        self._commit(now, {}, out)

    def end_of_input(self, out: Emitted) -> None:
        """A bounded input (a replay) has ended: every command still waiting for its start says it never started."""
        clock = self.clock_ms
        for cmd in sorted(self.pending, key=lambda c: (c.start_ms, c.seq)):
            out.statuses.append(cmd.status("expired", clock if clock is not None else cmd.start_ms,
                                           f"never started: the input ended at {clock} before its start {cmd.start_ms}"))
        self.pending.clear()

    # -- commands ----------------------------------------------------------------------
    def _activate(self, cmd: Command, now: int, removed: dict[int, tuple[Command, int]], out: Emitted) -> None:
        for other in list(self.active):
            if other.seq < cmd.seq and _within(other.node_path, cmd.node_path):
                self.active.remove(other)
                out.statuses.append(other.status("superseded", now, f"superseded by command {cmd.command_id} "
                                                 f"for node {cmd.node_path}"))
                removed[other.seq] = (other, now)
            elif other.seq > cmd.seq and _within(cmd.node_path, other.node_path):
                out.statuses.append(cmd.status("superseded", now, f"superseded by command {other.command_id} "
                                               f"for node {other.node_path}, issued later and started earlier"))
                return
        self.active.append(cmd)
        self.active.sort(key=lambda c: c.seq)
        self._allocate(cmd, self._pool(cmd, now), now, "accepted", None, out)

    def _pool(self, cmd: Command, now: int) -> np.ndarray:
        """Devices the command may use now: under its node, not taken by a newer command, fresh, with a SoC."""
        t = self.table
        owned = t.under(cmd.node_path).copy()
        for newer in self.active:
            if newer.seq > cmd.seq:
                owned &= ~t.under(newer.node_path)
        n = t.n
        owned &= (now - t.last_seen_ms[:n] <= self.staleness_ms) & np.isfinite(t.soc_pct[:n]) & t.dispatchable[:n]
        if cmd.program:
            owned &= t.enrolled(cmd.program)
        return np.flatnonzero(owned)

    def _rebalance(self, now: int, out: Emitted) -> None:
        for cmd in list(self.active):
            pool = self._pool(cmd, now)
            if not np.array_equal(pool, cmd.pool):
                gone = np.setdiff1d(cmd.pool, pool, assume_unique=True)
                taken = np.zeros(self.table.n, dtype=bool)
                for newer in self.active:
                    if newer.seq > cmd.seq:
                        taken |= self.table.under(newer.node_path)
                n_taken = int(np.count_nonzero(taken[gone]))
                joined = int(np.setdiff1d(pool, cmd.pool, assume_unique=True).size)
                reason = (f"{gone.size - n_taken} device(s) left or went stale, {n_taken} taken by newer commands, "
                          f"{joined} joined")
                self._allocate(cmd, pool, now, "reallocated", reason, out)

    def _allocate(self, cmd: Command, pool: np.ndarray, now: int, state: str, reason: str | None, out: Emitted) -> None:
        allocation = allocate_setpoints(self.table.arrays(pool, cmd.program), cmd.target_w, cmd.start_ms, cmd.end_ms, now,
                                        staleness_ms=self.staleness_ms)
        used = np.flatnonzero(allocation.setpoints_w)
        cmd.pool, cmd.alloc_idx, cmd.alloc_w = pool, pool[used], allocation.setpoints_w[used]
        out.statuses.append(cmd.status(state, now, reason))

    def _commit(self, now: int, removed: dict[int, tuple[Command, int]], out: Emitted) -> None:
        """Emit the difference between the set points devices follow and those the active commands want.

        A device gets a set point when its command or its power changes, and a release (0 W) when no
        command wants it any more: at the command's end when it expired, now otherwise. With
        ``resend_ms``, an unchanged set point is sent again (same start) once it is that old.
        """
        n = self.table.n
        self.current_seq = _fit(self.current_seq, n, -1)
        self.current_w = _fit(self.current_w, n, 0.0)
        self.current_start = _fit(self.current_start, n, 0)
        self.sent_ms = _fit(self.sent_ms, n, 0)
        want_seq = np.full(n, -1, dtype=np.int64)
        want_w = np.zeros(n)
        by_seq = {c.seq: c for c in self.active}
        for cmd in self.active:  # ascending seq: a newer command wins a device (pools are disjoint anyway)
            want_seq[cmd.alloc_idx] = cmd.seq
            want_w[cmd.alloc_idx] = cmd.alloc_w
        changed = np.flatnonzero((want_seq != self.current_seq) | (want_w != self.current_w))
        ids, wanted = self.table.ids, want_seq[changed]
        stale_sent = np.zeros(n, dtype=bool)
        if self.resend_ms > 0:
            stale_sent = (want_seq >= 0) & (want_seq == self.current_seq) & (want_w == self.current_w) & \
                (now - self.sent_ms >= self.resend_ms)
        for cmd in self.active:  # new set points, command by command, in device-row order
            rows = changed[wanted == cmd.seq]
            if rows.size:
                start = int(max(now, cmd.start_ms))
                out.setpoints.extend(_setpoint(cmd, ids[i], w, start, cmd.end_ms)
                                     for i, w in zip(rows.tolist(), want_w[rows].tolist()))
                self.current_start[rows] = start
                self.sent_ms[rows] = now
            again = np.flatnonzero(stale_sent & (want_seq == cmd.seq))
            if again.size:
                out.setpoints.extend(_setpoint(cmd, ids[i], w, s, cmd.end_ms) for i, w, s in
                                     zip(again.tolist(), want_w[again].tolist(), self.current_start[again].tolist()))
                self.sent_ms[again] = now
        released = changed[wanted < 0]
        old_seq = self.current_seq[released]
        for seq in np.unique(old_seq).tolist():
            cmd, at = removed.get(seq) or (by_seq.get(seq), now)
            if cmd is not None:
                at, end = int(at), int(max(at, cmd.end_ms))
                out.setpoints.extend(_setpoint(cmd, ids[i], 0.0, at, end) for i in released[old_seq == seq].tolist())
        self.current_seq, self.current_w = want_seq, want_w
        for cmd, _ in removed.values():
            if not any(c.node_path == cmd.node_path for c in self.active + self.pending):
                self.table.forget_node(cmd.node_path)


def _fit(values: np.ndarray, n: int, fill: float) -> np.ndarray:
    if len(values) >= n:
        return values[:n]
    out = np.full(n, fill, dtype=values.dtype)
    out[: len(values)] = values
    return out


def _setpoint(cmd: Command, device_id: str, w: float, start: int, end: int) -> dict[str, Any]:
    # start/end are Python ints already (event times), w a Python float (from tolist)
    return {"command_id": cmd.command_id, "device_id": device_id, "node_path": cmd.node_path,
            "setpoint_w": w + 0.0, "start": start, "end": end}
