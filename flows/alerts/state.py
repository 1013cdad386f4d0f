"""The alert state of one key of the ``alerts`` flow: one tree of the fleet, or the dead letters.

Events arrive in input order as small tuples (see :data:`Event`); :meth:`AlertState.step` applies a
batch of them and returns the alert and event records they caused.

Time is event time, moved by clock events only: ``("c", watermark, source, wall_s)`` from each
reader of the input (each worker of the flow; see ``flows.alerts.flow.Router``). A reader's
watermark is the lowest of its input partitions' latest event times, so a partition read ahead of
the others (a backlog, a restart) does not make the devices of the others look silent; the
state's time is the lowest of its readers' watermarks, again. A reader whose last clock is more
than ``reader_idle_s`` of wall time older than the newest is idle and not waited for (``wall_s``
is data here, read by the reader: this module reads no clock). When the time passes a multiple
of ``tick_ms`` the time-based rules (device_offline, grid_outage, dlq_spike) are evaluated at
that instant, so the result depends on the order of events, never on how they were batched.

Per-device rules (low_soc, islanded) are evaluated at each reading of the device, at its time;
dispatch_shortfall at each window of a node with an active command.

Devices leave the state: one removed from the registry (a ``device_removed`` event) or moved to another tree
(``device_moved``: its readings go to that tree's state now) at once, one silent for
``forget_ms`` (7 days by default) at a tick. Its open alerts end with it: a firing one is ``resolved``, a
pending one ``dropped``, each with a summary saying why; a reading that comes later starts it afresh.

Inhibition: a device alert is not raised while a ``grid_outage`` alert (pending or firing) is open
on a node above the device (one alert for the cause), and an outage on a node inhibits one on the
nodes below it. ``device_offline`` is not evaluated until the time is ``offline_ms`` past the first
clock after a (re)start (:meth:`restarted`), so a flow that starts, or resumes with a backlog, does
not see every device it has not heard yet as offline.

Pure: no I/O, no clock; picklable (it is the flow's recovery snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from flows.alerts.logic import Emitted, RuleConfig, Track, dlq_threshold, observe, resolve, shortfall_misses

__all__ = ["AlertState", "Device", "Event", "ancestors", "DEVICE_RULES"]

DEVICE_RULES = ("device_offline", "low_soc", "islanded")  # the rules whose subject is a device

#: ("r", ts, device_id, region_path, soc_pct, grid_connected)   a canonical reading
#: ("a", window_end, node_path, window_start, battery_w)         a node aggregate
#: ("s", at, node_path, command_id, state, allocated_w)          a dispatch status
#: ("d", ts, dialect)                                            a dead letter
#: ("c", watermark, source[, wall_s])                           a reader's watermark: time advances
#: ("x", at, device_id, why)                                     a device leaves this tree (device_removed, _moved)
Event = tuple

_DLQ_BUCKET_MS = 10_000  # dead letters are counted in 10 s buckets: the windows slide in 10 s steps
_MAX_TICKS = 100  # a jump of the watermark evaluates at most this many ticks (the last ones)


@lru_cache(maxsize=65_536)
def ancestors(region_path: str) -> tuple[str, ...]:
    """Every node from the root down to the site: ``us/ca/pge`` -> ``us``, ``us/ca``, ``us/ca/pge``."""
    parts = region_path.split("/")
    return tuple("/".join(parts[:i]) for i in range(1, len(parts) + 1))


@dataclass
class Device:
    region_path: str
    last_ts: int
    grid_connected: bool | None = None
    soc_pct: float | None = None


@dataclass
class AlertState:
    cfg: RuleConfig
    watermark: int | None = None
    next_tick: int | None = None
    offline_armed_at: int | None = None  # device_offline is evaluated from this event time on
    sources: dict[str, tuple[int, float | None]] = field(default_factory=dict)  # reader -> (watermark, wall s)
    outages: set[str] = field(default_factory=set)  # nodes with an open grid_outage alert (inhibit below)
    offline_hold: bool = False  # set by the flow after a restart, while its wall-clock wait runs
    devices: dict[str, Device] = field(default_factory=dict)
    tracks: dict[tuple[str, str], Track] = field(default_factory=dict)
    commands: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)  # node -> command -> (W, since)
    windows: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # node -> (last window, misses, withins)
    dlq: dict[str, dict[int, int]] = field(default_factory=dict)  # dialect -> 10 s bucket -> dead letters

    # -- lifecycle ---------------------------------------------------------------------------------
    def restarted(self) -> None:
        """The flow (re)started: wait one offline period of event time before judging silence; new readers."""
        self.offline_armed_at = None
        self.sources.clear()

    def empty(self) -> bool:
        return not (self.devices or self.tracks or self.commands or self.dlq)  # (a clock alone is no state)

    def step(self, events: Iterable[Event]) -> Emitted:
        out = Emitted()
        for ev in events:
            kind = ev[0]
            if kind == "c":
                self._on_clock(ev[1], ev[2], ev[3] if len(ev) > 3 else None, out)
            elif kind == "r":
                self._on_reading(ev, out)
            elif kind == "a":
                self._on_aggregate(ev, out)
            elif kind == "s":
                self._on_status(ev, out)
            elif kind == "x":
                self._forget(ev[2], ev[1], ev[3], out)
            elif kind == "d":
                bucket = ev[1] // _DLQ_BUCKET_MS
                counts = self.dlq.setdefault(ev[2], {})
                counts[bucket] = counts.get(bucket, 0) + 1
        return out

    # -- time --------------------------------------------------------------------------------------
    def _on_clock(self, watermark: int, source: str, wall_s: float | None, out: Emitted) -> None:
        sources = self.sources
        previous = sources.get(source)
        if previous is None or watermark >= previous[0]:
            sources[source] = (watermark, wall_s)
        walls = [w for _, w in sources.values() if w is not None]
        if walls:
            newest = max(walls)
            for gone in [s for s, (_, w) in sources.items() if w is not None and w < newest - 10 * self.cfg.reader_idle_s]:
                del sources[gone]  # a reader that stopped long ago
            live = [m for m, w in sources.values() if w is None or w >= newest - self.cfg.reader_idle_s]
        else:
            live = [m for m, _ in sources.values()]
        self._advance(min(live), out)

    def _advance(self, ts: int, out: Emitted) -> None:
        if self.offline_armed_at is None:
            self.offline_armed_at = max(ts, self.watermark or ts) + self.cfg.offline_ms
        if self.watermark is None:
            self.watermark = ts
            self.next_tick = (ts // self.cfg.tick_ms + 1) * self.cfg.tick_ms
            return
        if ts <= self.watermark:
            return
        tick = self.cfg.tick_ms
        due = (ts - self.next_tick) // tick + 1 if ts >= self.next_tick else 0
        if due > _MAX_TICKS:
            self.next_tick += (due - _MAX_TICKS) * tick
        while self.next_tick <= ts:
            self._tick(self.next_tick, out)
            self.next_tick += tick
        self.watermark = ts

    def _tick(self, t: int, out: Emitted) -> None:
        self._grid_outage(t, out)
        self._fire_pending(t, out)
        if t >= self.offline_armed_at and not self.offline_hold:
            self._offline(t, out)
        if self.dlq:
            self._dlq_spike(t, out)

    # -- rules ---------------------------------------------------------------------------------------
    def _inhibited(self, region_path: str) -> bool:
        outages = self.outages
        return bool(outages) and any(node in outages for node in ancestors(region_path))

    def _observe(self, rule: str, subject: str, node_path: str, at: int, *, out: Emitted, **kw) -> None:
        """``logic.observe`` on the open alert of ``(rule, subject)``, keeping ``tracks`` and ``outages`` up to date."""
        key = (rule, subject)
        track = observe(self.tracks.get(key), self.cfg.spec_of[rule], out, subject=subject, node_path=node_path,
                        at=at, **kw)
        if track is None:
            if self.tracks.pop(key, None) is not None and rule == "grid_outage":
                self.outages.discard(subject)
        else:
            self.tracks[key] = track
            if rule == "grid_outage":
                self.outages.add(subject)

    def _on_reading(self, ev: Event, out: Emitted) -> None:
        _, ts, device_id, region_path, soc_pct, grid_connected = ev
        cfg = self.cfg
        dev = self.devices.get(device_id)
        if dev is None:
            dev = self.devices[device_id] = Device(region_path, ts, grid_connected, soc_pct)
        elif ts >= dev.last_ts:
            dev.region_path, dev.last_ts, dev.grid_connected, dev.soc_pct = region_path, ts, grid_connected, soc_pct
        else:
            return  # an older reading than one already seen says nothing new about the device now
        offline = self.tracks.get(("device_offline", device_id))
        if offline is not None:
            # only a current reading shows the device back, one less than half the silence allowed behind the time
            # (hysteresis): a device whose readings lag about the threshold (a clock behind, a slow link) would
            # otherwise resolve the alert for the next tick to raise it again, forever
            fresh = self.watermark is None or ts > self.watermark - cfg.offline_ms // 2
            offline.count = offline.count + 1 if fresh else 0
            self._observe("device_offline", device_id, region_path, ts, out=out, raised=False,
                          cleared=offline.count >= cfg.offline_resolve_readings, value=0.0, threshold=cfg.offline_ms / 1000)
        self._device_rules(device_id, dev, ts, out, may_fire=False)

    def _device_rules(self, device_id: str, dev: Device, at: int, out: Emitted, *, may_fire: bool) -> None:
        """low_soc and islanded of one device at ``at``. A pending alert fires only at a tick (``may_fire``),
        after the node rules of the same instant: a device read ahead of the watermark cannot fire before
        the outage of its node (evaluated at the watermark) is known."""
        cfg, tracks, soc = self.cfg, self.tracks, dev.soc_pct
        # the common case first: nothing open and nothing to raise (no call at all)
        if (soc is not None and soc < cfg.low_soc_raise_pct) or ("low_soc", device_id) in tracks:
            soc = soc if soc is not None else cfg.low_soc_raise_pct  # unknown SoC: hold the state
            self._observe("low_soc", device_id, dev.region_path, at, out=out, raised=soc < cfg.low_soc_raise_pct,
                          cleared=soc >= cfg.low_soc_clear_pct, value=soc, threshold=cfg.low_soc_raise_pct,
                          inhibited=self._inhibited(dev.region_path), may_fire=may_fire)
        if dev.grid_connected is False or (dev.grid_connected is not None and ("islanded", device_id) in tracks):
            self._observe("islanded", device_id, dev.region_path, at, out=out, raised=not dev.grid_connected,
                          cleared=dev.grid_connected, value=0.0 if dev.grid_connected else 1.0, threshold=1.0,
                          inhibited=self._inhibited(dev.region_path), may_fire=may_fire)

    def _fire_pending(self, t: int, out: Emitted) -> None:
        pending = {subject for (rule, subject), track in self.tracks.items()
                   if track.state == "pending" and rule in ("low_soc", "islanded")}
        for device_id in sorted(pending):
            self._device_rules(device_id, self.devices[device_id], t, out, may_fire=True)

    def _forget(self, device_id: str, at: int, why: str, out: Emitted) -> None:
        """The device leaves the state; its open alerts end (resolved if firing, dropped if pending)."""
        self.devices.pop(device_id, None)
        for rule in DEVICE_RULES:
            track = self.tracks.pop((rule, device_id), None)
            if track is not None:
                resolve(track, self.cfg.spec_of[rule], out, at, why)

    def _offline(self, t: int, out: Emitted) -> None:
        cfg = self.cfg
        gone = []
        for device_id, dev in self.devices.items():
            silent_ms = t - dev.last_ts
            if silent_ms >= cfg.forget_ms:
                gone.append((device_id, silent_ms))
                continue
            key = ("device_offline", device_id)
            if key in self.tracks:
                track = self.tracks[key]
                if silent_ms >= cfg.offline_ms:
                    track.count = 0  # the readings in a row that resolve it start again
                continue
            if silent_ms >= cfg.offline_ms and not self._inhibited(dev.region_path):
                self._observe("device_offline", device_id, dev.region_path, t, out=out, raised=True, cleared=False,
                              value=silent_ms / 1000, threshold=cfg.offline_ms / 1000,
                              started_at=dev.last_ts + cfg.offline_ms)
        for device_id, silent_ms in gone:
            self._forget(device_id, t, f"device {device_id}: no reading for {silent_ms / 86_400_000:.1f} days, "
                                       "no longer watched", out)

    def _grid_outage(self, t: int, out: Emitted) -> None:
        cfg = self.cfg
        reporting: dict[str, list[int]] = {}
        for dev in self.devices.values():
            if dev.grid_connected is None or t - dev.last_ts > cfg.reporting_ms:
                continue
            for node in ancestors(dev.region_path):
                counts = reporting.get(node)
                if counts is None:
                    counts = reporting[node] = [0, 0]
                counts[0] += 1
                counts[1] += not dev.grid_connected
        # from the root down: an outage open on a node inhibits one on the nodes below it (the same cause)
        for node in sorted(reporting, key=lambda n: (n.count("/"), n)):
            counts = reporting[node]
            ratio = counts[1] / counts[0]
            parents = ancestors(node)[:-1]
            self._observe("grid_outage", node, node, t, out=out, raised=ratio >= cfg.outage_raise_ratio,
                          cleared=ratio < cfg.outage_clear_ratio, value=ratio, threshold=cfg.outage_raise_ratio,
                          inhibited=any(("grid_outage", p) in self.tracks for p in parents))
        # a node nobody under it reports about: nothing to judge, its alert keeps its state

    def _dlq_spike(self, t: int, out: Emitted) -> None:
        cfg = self.cfg
        now = t // _DLQ_BUCKET_MS
        window = max(cfg.dlq_window_ms // _DLQ_BUCKET_MS, 1)
        oldest = now - window - max(cfg.dlq_baseline_ms // _DLQ_BUCKET_MS, 1)
        for dialect in list(self.dlq):
            counts = self.dlq[dialect]
            for bucket in [b for b in counts if b <= oldest]:
                del counts[bucket]
            recent = sum(c for b, c in counts.items() if b > now - window)
            baseline = sum(c for b, c in counts.items() if b <= now - window)
            threshold = dlq_threshold(baseline, cfg)
            self._observe("dlq_spike", dialect, "", t, out=out, raised=recent > threshold, cleared=recent < threshold / 2,
                          value=float(recent), threshold=threshold)
            if not counts and ("dlq_spike", dialect) not in self.tracks:
                del self.dlq[dialect]

    def _on_status(self, ev: Event, out: Emitted) -> None:
        _, at, node, command_id, state, allocated_w = ev
        active = self.commands.setdefault(node, {})
        if state in ("accepted", "reallocated"):
            since = active[command_id][1] if command_id in active else at
            active[command_id] = (allocated_w, since)
            return
        active.pop(command_id, None)
        if not active:
            del self.commands[node]
            self.windows.pop(node, None)
            track = self.tracks.pop(("dispatch_shortfall", node), None)
            if track is not None:
                resolve(track, self.cfg.spec_of["dispatch_shortfall"], out, at, f"node {node}: its command ended ({state})")

    def _on_aggregate(self, ev: Event, out: Emitted) -> None:
        _, window_end, node, window_start, battery_w = ev
        active = self.commands.get(node)
        if not active or window_start < max(since for _, since in active.values()):
            return  # no command, or a window that began before the newest command did
        last, misses, withins = self.windows.get(node, (None, 0, 0))
        if last is not None and window_start <= last:
            return  # this window (or an older one) was counted already
        allocated = sum(w for w, _ in active.values())
        missed, gap, allowed = shortfall_misses(battery_w, allocated, self.cfg)
        misses, withins = (misses + 1, 0) if missed else (0, withins + 1)
        self.windows[node] = (window_start, misses, withins)
        n = self.cfg.shortfall_windows
        self._observe("dispatch_shortfall", node, node, window_end, out=out, raised=misses >= n, cleared=withins >= n,
                      value=gap, threshold=allowed)

