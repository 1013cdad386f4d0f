"""The deterministic telemetry generator: a fleet, a clock you drive, raw records out.

``Simulation(fleet, config).step(now_ms)`` advances event time to ``now_ms``
and returns the kcat-style records ``(key, value, timestamp_ms)`` whose send
time has come, ordered by send time. The output depends only on the fleet,
the config (seed included) and the set points applied, never on how finely
the caller slices time: every device draws from its own random stream in
tick order, and ties are broken by generation order.

Each device reads every ``rate_s`` seconds at its own phase. A reading
reports the SoC at its tick and the powers held until the next tick
(physics.py). The edge receives it 20-400 ms later (``received_at``) and
sends it 0-50 ms after that unless a fault delays it (faults.py).

Scenarios (``SimulationConfig``, all off by default): a program reserve that
enrolled devices hold for peak shaving, and a load surge (an evening peak).
On demand, ``set_offline`` takes chosen devices offline (silent, deaf to set
points) until they are named no more, and ``set_conditions`` islands chosen
devices or regions (they report ``grid_connected`` false) and makes the
devices of chosen dialects send garbage instead of readings.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Iterator, NamedTuple

from devtools.simulator.dialects import Reading, _zone, encode_envelope, envelope_bytes
from devtools.simulator.faults import (
    DUPLICATE_GAP_MS,
    LATE_DELAY_MS,
    OFFLINE_MS,
    OUT_OF_ORDER_DELAY_MS,
    FaultConfig,
    clock_skew_ms,
    garbage_bytes,
    inject_nan,
    inject_not_implemented,
)
from devtools.simulator.physics import BatterySpec, LoadSurge, load_shape_w, solar_w, step_battery
from devtools.simulator.tree import Device, Fleet

__all__ = ["Record", "Emission", "SetPoint", "SimulationConfig", "Simulation"]

_RECEIVE_LATENCY_MS = (20, 400)
_SEND_LATENCY_MS = (0, 50)


class Record(NamedTuple):
    """One message as kcat sees it: key = device_id, value = raw bytes, timestamp = send time."""

    key: bytes
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class Emission:
    """A record with what produced it: the truth and the faults applied (for tests and metrics)."""

    record: Record
    device_id: str
    tick_ms: int
    reading: Reading
    faults: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetPoint:
    """A device set point from ``device.commands``: > 0 discharge, < 0 charge, 0 release."""

    device_id: str
    setpoint_w: float
    start_ms: int
    end_ms: int
    command_id: str = ""


@dataclass(frozen=True)
class SimulationConfig:
    start_ms: int
    rate_s: float = 5.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    #: Seed of the readings' noise and faults; None uses the fleet's seed.
    seed: int | None = None
    #: Devices enrolled in peak shaving hold this SoC for the program: their self-consumption
    #: stops there (100: they only charge from solar), set points may go below. None: no program.
    program_reserve_pct: float | None = None
    #: Extra load in every home for a while (an evening peak); None: the daily shape only.
    load_surge: LoadSurge | None = None

    def __post_init__(self) -> None:
        if not (self.rate_s > 0 and math.isfinite(self.rate_s)):
            raise ValueError(f"rate_s must be a positive number of seconds, got {self.rate_s}")
        if self.program_reserve_pct is not None and not 0.0 <= self.program_reserve_pct <= 100.0:
            raise ValueError(f"program_reserve_pct must be between 0 and 100, got {self.program_reserve_pct}")


@dataclass
class _DeviceState:
    device: Device
    spec: BatterySpec
    rng: random.Random
    soc_pct: float
    phase_ms: int
    skew_ms: int
    cloud: float = 0.3
    load_noise: float = 1.0
    spike_w: float = 0.0
    spike_until_ms: int = 0
    offline_until_ms: int = -1
    #: Taken offline on demand (``Simulation.set_offline``): silent and deaf to set points.
    forced_offline: bool = False
    #: On demand (``Simulation.set_conditions``): reports being islanded; sends garbage instead of readings.
    forced_islanded: bool = False
    forced_garbage: bool = False
    #: Self-consumption floor on top of the device's reserve (the program reserve, if enrolled).
    hold_pct: float = 0.0
    setpoints: list[SetPoint] = field(default_factory=list)


class Simulation:
    """Drive with ``step(now_ms)``; feed set points with ``apply_setpoint``."""

    def __init__(self, fleet: Fleet, config: SimulationConfig):
        self.fleet = fleet
        self.config = config
        self.rate_ms = max(1, round(config.rate_s * 1000))
        self.now_ms = config.start_ms
        self.stats: Counter[str] = Counter()
        seed = fleet.seed if config.seed is None else config.seed
        self._states: list[_DeviceState] = []
        self._ticks: list[tuple[int, int]] = []
        for i, device in enumerate(fleet.devices):
            rng = random.Random(f"vpp-sim:{seed}:{device.device_id}")
            skew = clock_skew_ms(rng) if rng.random() < config.faults.clock_skew else 0
            phase = rng.randrange(self.rate_ms)
            a = device.asset
            self._states.append(
                _DeviceState(
                    device=device,
                    spec=BatterySpec(a.capacity_wh, a.max_charge_w, a.max_discharge_w, a.reserve_pct),
                    rng=rng,
                    soc_pct=device.initial_soc_pct,
                    phase_ms=phase,
                    skew_ms=skew,
                    cloud=rng.uniform(0.0, 0.6),
                    hold_pct=(config.program_reserve_pct or 0.0) if a.enrolled_peak_shaving else 0.0,
                )
            )
            self._ticks.append((config.start_ms + phase, i))
        heapq.heapify(self._ticks)
        self._pending: list[tuple[int, int, Emission]] = []
        self._seq = 0
        self._index = {d.device_id: i for i, d in enumerate(fleet.devices)}

    # -- set points --------------------------------------------------------------
    def apply_setpoint(self, sp: SetPoint) -> bool:
        """Take a set point; returns False when the device does not take it (unknown, or offline).

        A newer set point supersedes older ones from its start on (they are cut
        at its start and never resume). A release (0 W) is "no command". A
        device taken offline misses it (and keeps what it had).
        """
        i = self._index.get(sp.device_id)
        if i is None:
            self.stats["setpoints_unknown_device"] += 1
            return False
        state = self._states[i]
        if state.forced_offline:
            self.stats["setpoints_missed_offline"] += 1
            return False
        kept = []
        for old in state.setpoints:
            end = min(old.end_ms, sp.start_ms)
            if end > old.start_ms:
                kept.append(SetPoint(old.device_id, old.setpoint_w, old.start_ms, end, old.command_id))
        if sp.end_ms > sp.start_ms:
            kept.append(sp)
        state.setpoints = kept
        self.stats["setpoints_applied"] += 1
        return True

    def active_setpoint_w(self, device_id: str, at_ms: int) -> float | None:
        state = self._states[self._index[device_id]]
        return _active(state, at_ms)

    def soc_pct(self, device_id: str) -> float:
        """The device's true SoC now (after its last tick)."""
        return self._states[self._index[device_id]].soc_pct

    # -- devices taken offline on demand -------------------------------------------
    def set_offline(self, selectors: Iterable[str]) -> set[str]:
        """Take offline exactly the devices named (by device id, or by a region path covering them).

        An offline device keeps running (its battery follows the set point it has) but sends no
        reading and receives no set point, as a gateway that lost its uplink; devices not named
        any more come back from their next tick. Returns the ids offline now.
        """
        wanted = {s.strip().strip("/") for s in selectors} - {""}
        offline = {d.device_id for d in self.fleet.devices
                   if d.device_id in wanted or any(_covers(node, d.asset.region_path) for node in wanted)}
        for st in self._states:
            st.forced_offline = st.device.device_id in offline
        return offline

    def set_conditions(self, islanded: Iterable[str], garbage_dialects: Iterable[str]) -> tuple[set[str], set[str]]:
        """Island exactly the devices named (device ids or region paths: ``grid_connected`` false) and make the
        devices of the dialects named send garbage bytes; devices not named any more are back to normal from
        their next tick. Returns the ids islanded and the ids sending garbage now."""
        wanted = {s.strip().strip("/") for s in islanded} - {""}
        dialects = {d.strip() for d in garbage_dialects} - {""}
        off_grid = {d.device_id for d in self.fleet.devices
                    if d.device_id in wanted or any(_covers(node, d.asset.region_path) for node in wanted)}
        garbage = {d.device_id for d in self.fleet.devices if d.dialect in dialects}
        for st in self._states:
            st.forced_islanded = st.device.device_id in off_grid
            st.forced_garbage = st.device.device_id in garbage
        return off_grid, garbage

    # -- time ----------------------------------------------------------------------
    def advance(self, now_ms: int) -> list[Emission]:
        """Simulate every tick up to ``now_ms`` and return emissions sent by then, by send time."""
        ticks = self._ticks
        while ticks and ticks[0][0] <= now_ms:
            tick_ms, i = heapq.heappop(ticks)
            self._tick(self._states[i], tick_ms)
            heapq.heappush(ticks, (tick_ms + self.rate_ms, i))
        self.now_ms = max(self.now_ms, now_ms)
        out: list[Emission] = []
        pending = self._pending
        while pending and pending[0][0] <= now_ms:
            out.append(heapq.heappop(pending)[2])
        return out

    def step(self, now_ms: int) -> list[Record]:
        return [e.record for e in self.advance(now_ms)]

    def drain(self) -> list[Emission]:
        """Everything still held back (late readings), by send time; ticks are not advanced."""
        out = [e for _, _, e in sorted(self._pending, key=lambda p: (p[0], p[1]))]
        self._pending.clear()
        return out

    def iter_run(self, duration_s: float, chunk_s: float = 60.0) -> Iterator[Emission]:
        """Emissions of ticks in [start, start + duration), late ones included, by send time.

        Streams in event-time chunks so a long run never sits in memory.
        """
        end_ms = self.config.start_ms + round(duration_s * 1000)
        chunk_ms = max(1, round(chunk_s * 1000))
        t = self.now_ms
        while True:
            t = min(t + chunk_ms, end_ms - 1)
            yield from self.advance(t)
            if t >= end_ms - 1:
                break
        yield from self.drain()

    def run(self, duration_s: float) -> list[Emission]:
        return list(self.iter_run(duration_s))

    # -- one reading ---------------------------------------------------------------
    def _tick(self, st: _DeviceState, tick_ms: int) -> None:
        device, rng, faults = st.device, st.rng, self.config.faults
        dt_s = self.rate_ms / 1000.0
        local = datetime.fromtimestamp(tick_ms / 1000.0, _zone(device.timezone))
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        dst = bool(local.dst())
        # weather and habits: slow random walks, drawn every tick whatever happens next
        scale = math.sqrt(dt_s / 5.0)
        st.cloud = min(1.0, max(0.0, st.cloud + rng.gauss(0.0, 0.03) * scale + 0.002 * (0.3 - st.cloud)))
        st.load_noise = min(1.6, max(0.5, 1.0 + (st.load_noise - 1.0) * 0.98 + rng.gauss(0.0, 0.02) * scale))
        if tick_ms >= st.spike_until_ms:
            st.spike_w = 0.0
            if rng.random() < 0.003 * dt_s / 5.0:  # kettle, oven, EV charger
                st.spike_w = float(rng.randrange(800, 3001, 50))
                st.spike_until_ms = tick_ms + rng.randrange(60_000, 1_200_001)
        solar = solar_w(device.solar_peak_w, hour, local.timetuple().tm_yday, st.cloud, dst)
        load = load_shape_w(device.load_base_w, device.load_evening_w, hour, st.load_noise) + st.spike_w
        if self.config.load_surge is not None:
            load += self.config.load_surge.extra_at(tick_ms)
        soc_before = st.soc_pct
        if st.setpoints:
            st.setpoints = [sp for sp in st.setpoints if sp.end_ms > tick_ms]
        step = step_battery(st.spec, soc_before, solar, load, dt_s, _active(st, tick_ms), st.hold_pct)
        st.soc_pct = step.soc_pct
        sub_ms_ns = rng.randrange(1_000_000)
        received_ms = tick_ms + rng.randint(*_RECEIVE_LATENCY_MS)
        send_ms = received_ms + rng.randint(*_SEND_LATENCY_MS)
        draws = [rng.random() for _ in range(8)]  # a fixed number per tick keeps streams aligned
        self.stats["ticks"] += 1
        if tick_ms < st.offline_until_ms:
            self.stats["offline_silent"] += 1
            return
        if draws[0] < faults.offline:
            st.offline_until_ms = tick_ms + rng.randint(*OFFLINE_MS)
            self.stats["offline_episodes"] += 1
            self.stats["offline_silent"] += 1
            return
        if st.forced_offline:
            self.stats["offline_forced_silent"] += 1
            return
        if draws[1] < faults.drop:
            self.stats["dropped"] += 1
            return
        reading = Reading(
            device_id=device.device_id,
            reading_ns=(tick_ms + st.skew_ms) * 1_000_000 + sub_ms_ns,
            soc_pct=soc_before,
            battery_w=step.battery_w,
            solar_w=solar,
            load_w=load,
            grid_w=step.grid_w,
            grid_connected=not st.forced_islanded,
        )
        envelope = encode_envelope(device, reading, received_ms)
        applied: list[str] = []
        if st.skew_ms:
            applied.append("clock_skew")
        allow_nan = False
        if draws[2] < faults.nan:
            envelope["payload"], _ = inject_nan(envelope["payload"], device.dialect, rng)
            allow_nan = True
            applied.append("nan")
        elif device.dialect == "sunspec/802" and draws[3] < faults.not_implemented:
            envelope["payload"], _ = inject_not_implemented(envelope["payload"], rng)
            applied.append("not_implemented")
        value = envelope_bytes(envelope, allow_nan=allow_nan)
        if st.forced_garbage:
            value = garbage_bytes(rng, value)
            applied.append("garbage_forced")
        elif draws[4] < faults.garbage:
            value = garbage_bytes(rng, value)
            applied.append("garbage")
        if draws[5] < faults.late:
            send_ms += rng.randint(*LATE_DELAY_MS)
            applied.append("late")
        elif draws[6] < faults.out_of_order:
            send_ms += rng.randint(*OUT_OF_ORDER_DELAY_MS)
            applied.append("out_of_order")
        key = device.device_id.encode()
        tags = tuple(applied)
        self._push(Emission(Record(key, value, send_ms), device.device_id, tick_ms, reading, tags))
        if draws[7] < faults.duplicate:
            again = send_ms + rng.randint(*DUPLICATE_GAP_MS)
            self._push(Emission(Record(key, value, again), device.device_id, tick_ms, reading, tags + ("duplicate",)))
            self.stats["duplicate"] += 1
        for tag in tags:
            self.stats[tag] += 1

    def _push(self, emission: Emission) -> None:
        heapq.heappush(self._pending, (emission.record.timestamp_ms, self._seq, emission))
        self._seq += 1
        self.stats["sent"] += 1


def _covers(node: str, region_path: str) -> bool:
    return region_path == node or region_path.startswith(node + "/")


def _active(state: _DeviceState, at_ms: int) -> float | None:
    for sp in state.setpoints:
        if sp.start_ms <= at_ms < sp.end_ms:
            return sp.setpoint_w or None
    return None
