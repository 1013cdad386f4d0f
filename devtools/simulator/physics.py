"""The physics of one home: solar by time of day, household load, and a battery.

Pure functions, no clocks, no randomness of their own (noise is passed in).

Model choices, written down because downstream checks depend on them:

- Energy is EXACTLY conserved at the battery terminals: over an interval
  ``dt_s`` at constant power, ``soc_pct`` changes by
  ``-battery_w * dt_s / 3600 / capacity_wh * 100``. There is no round-trip
  loss: ``battery_w`` is what enters or leaves the cells. (The optimizer may
  model an efficiency; the simulated devices keep the books exact so that the
  platform's energy accounting can be checked to the watt-hour.) The only
  deviation is clamping the result into [0, 100] against float rounding.
- A reading at time t reports the SoC at t and the powers held over
  [t, t + dt): zero-order hold.
- Without a set point the battery does self-consumption: it charges from
  solar surplus (solar > load) and discharges to cover the deficit, within
  its power limits, never above 100 % and never below its reserve. Below the
  reserve (after a dispatch drew it down) it only charges.
- A program may ask a device to hold energy for it (``hold_pct``, a program
  reserve): self-consumption then discharges only down to
  ``max(reserve, hold_pct)``; 100 holds everything (it still charges from
  solar surplus). Set points may use the held energy: it is the program's.
- With an active set point (> 0 discharge, < 0 charge) the battery follows
  it within its power limits and its energy: it may go down to 0 % and up to
  100 %, the reserve is the dispatcher's concern. A set point of 0 is a
  release, i.e. no command.
- The grid balances the home: ``grid_w = load_w - solar_w - battery_w``
  (> 0 imports). Canonical signs throughout (spec/telemetry.md section 3).
- A ``LoadSurge`` adds the same extra load to every home for a while (an
  evening peak event), on top of the daily shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BatterySpec",
    "BatteryStep",
    "LoadSurge",
    "step_battery",
    "soc_after",
    "solar_clear_sky_fraction",
    "solar_w",
    "load_shape_w",
]


@dataclass(frozen=True)
class BatterySpec:
    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    reserve_pct: float


@dataclass(frozen=True)
class BatteryStep:
    """The battery's power over one interval and the SoC at its end."""

    battery_w: float
    soc_pct: float
    grid_w: float
    following_setpoint: bool


def soc_after(spec: BatterySpec, soc_pct: float, battery_w: float, dt_s: float) -> float:
    """SoC after holding ``battery_w`` for ``dt_s`` (exact conservation, clamped against rounding)."""
    soc = soc_pct - battery_w * dt_s / 3600.0 / spec.capacity_wh * 100.0
    return min(100.0, max(0.0, soc))


def _max_discharge_w(spec: BatterySpec, soc_pct: float, floor_pct: float, dt_s: float) -> float:
    energy_wh = max(0.0, soc_pct - floor_pct) / 100.0 * spec.capacity_wh
    return min(spec.max_discharge_w, energy_wh * 3600.0 / dt_s)


def _max_charge_w(spec: BatterySpec, soc_pct: float, dt_s: float) -> float:
    headroom_wh = max(0.0, 100.0 - soc_pct) / 100.0 * spec.capacity_wh
    return min(spec.max_charge_w, headroom_wh * 3600.0 / dt_s)


def step_battery(
    spec: BatterySpec,
    soc_pct: float,
    solar_w: float,
    load_w: float,
    dt_s: float,
    setpoint_w: float | None = None,
    hold_pct: float = 0.0,
) -> BatteryStep:
    """Choose the battery power for the next ``dt_s`` seconds and evolve the SoC.

    ``setpoint_w`` None or 0 means self-consumption (discharging down to
    ``max(reserve, hold_pct)``); otherwise follow it (> 0 discharge) within
    the power and energy limits.
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be positive, got {dt_s}")
    following = bool(setpoint_w)  # None and 0.0 (a release) both mean no command
    if following:
        assert setpoint_w is not None
        if setpoint_w > 0:
            battery_w = min(setpoint_w, _max_discharge_w(spec, soc_pct, 0.0, dt_s))
        else:
            battery_w = -min(-setpoint_w, _max_charge_w(spec, soc_pct, dt_s))
    else:
        surplus_w = solar_w - load_w
        if surplus_w >= 0:
            battery_w = -min(surplus_w, _max_charge_w(spec, soc_pct, dt_s))
        else:
            battery_w = min(-surplus_w, _max_discharge_w(spec, soc_pct, max(spec.reserve_pct, hold_pct), dt_s))
    battery_w = battery_w + 0.0  # no -0.0 in the output
    return BatteryStep(
        battery_w=battery_w,
        soc_pct=soc_after(spec, soc_pct, battery_w, dt_s),
        grid_w=load_w - solar_w - battery_w,
        following_setpoint=following,
    )


def solar_clear_sky_fraction(local_hour: float, day_of_year: int, dst: bool = False) -> float:
    """Clear-sky output as a fraction of peak at a local clock time (northern hemisphere, mid latitudes).

    Zero at night, a bell around solar noon (about 12:30 standard time, 13:30
    under daylight saving), longer and stronger days in summer.
    """
    season = math.sin(2.0 * math.pi * (day_of_year - 80) / 365.0)  # +1 at the June solstice
    day_length_h = 12.0 + 2.5 * season
    noon = 12.5 + (1.0 if dst else 0.0)
    sunrise = noon - day_length_h / 2.0
    x = (local_hour - sunrise) / day_length_h
    if x <= 0.0 or x >= 1.0:
        return 0.0
    amplitude = 0.8 + 0.2 * season
    return amplitude * math.sin(math.pi * x) ** 1.5


def solar_w(peak_w: float, local_hour: float, day_of_year: int, cloud: float, dst: bool = False) -> float:
    """Solar production in W; ``cloud`` in [0, 1] removes up to 80 % of the clear-sky output."""
    cloud = min(1.0, max(0.0, cloud))
    return peak_w * solar_clear_sky_fraction(local_hour, day_of_year, dst) * (1.0 - 0.8 * cloud)


def _bump(hour: float, centre: float, width_h: float) -> float:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # wraps around midnight
    return math.exp(-0.5 * (d / width_h) ** 2)


def load_shape_w(base_w: float, evening_w: float, local_hour: float, noise: float = 1.0) -> float:
    """Household consumption in W: a base, a morning bump and an evening peak around 19:00.

    ``noise`` multiplies the shape (1.0 = typical day).
    """
    shape = (
        base_w
        + 0.35 * evening_w * _bump(local_hour, 7.5, 1.2)
        + 0.15 * evening_w * _bump(local_hour, 13.0, 2.5)
        + evening_w * _bump(local_hour, 19.0, 1.8)
    )
    return max(0.0, shape * noise)


@dataclass(frozen=True)
class LoadSurge:
    """Extra load in every home for a while: an evening peak (air conditioning on a hot evening).

    From ``start_ms`` the extra load rises linearly over ``ramp_s`` to ``extra_w``, holds it for
    ``hold_s``, then falls back linearly over ``ramp_s``.
    """

    start_ms: int
    extra_w: float
    ramp_s: float = 600.0
    hold_s: float = 1800.0

    def __post_init__(self) -> None:
        if not (self.extra_w >= 0 and self.ramp_s >= 0 and self.hold_s >= 0):
            raise ValueError(f"load surge {self}: extra_w, ramp_s and hold_s must be >= 0")

    @property
    def end_ms(self) -> int:
        return self.start_ms + round((2 * self.ramp_s + self.hold_s) * 1000)

    def extra_at(self, t_ms: int) -> float:
        """The extra load in W at ``t_ms``."""
        s = (t_ms - self.start_ms) / 1000.0
        if s <= 0 or t_ms >= self.end_ms:
            return 0.0
        if s < self.ramp_s:
            return self.extra_w * s / self.ramp_s
        if s <= self.ramp_s + self.hold_s:
            return self.extra_w
        return self.extra_w * max(0.0, 2 * self.ramp_s + self.hold_s - s) / self.ramp_s
