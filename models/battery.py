"""The optimizer's contract: a battery, prices by interval, and the schedule a plan returns (frozen, checked).

``models.optimize`` computes schedules; these types are shared by the forecaster, bid construction, the
autobidder and the market simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["INTERVAL", "INTERVAL_H", "SOLVERS", "STATUSES", "Battery", "PricePoint", "Schedule", "ScheduledInterval",
           "SolverUnavailableError"]

#: The default market interval (5 minutes); ``plan`` and ``build_bid`` take another as ``interval``.
INTERVAL = timedelta(minutes=5)
#: The default market interval in hours (the ``h`` of the model).
INTERVAL_H = 1.0 / 12.0
#: Solver names ``plan`` accepts.
SOLVERS = ("cbc", "highs")
#: Every status a ``Schedule`` can carry.
STATUSES = ("optimal", "infeasible", "unbounded", "not_solved", "error")

class SolverUnavailableError(RuntimeError):
    """The named solver cannot run here (e.g. ``highs`` without the ``highspy`` package)."""


def _check_finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_pct(name: str, value: float) -> None:
    _check_finite(name, value)
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{name} must be between 0 and 100, got {value!r}")


@dataclass(frozen=True)
class Battery:
    """One battery node: its size, power limits, state and economics.

    ``efficiency`` is the round-trip efficiency ``eta`` in (0, 1]; losses are
    split evenly between charging and discharging (``sqrt(eta)`` each way).
    ``soc_pct`` may lie below ``reserve_pct`` (see the module docstring).
    """

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc_pct: float
    reserve_pct: float
    efficiency: float
    degradation_usd_per_mwh: float
    final_soc_pct: float | None = None

    def __post_init__(self) -> None:
        _check_finite("capacity_wh", self.capacity_wh)
        if self.capacity_wh <= 0:
            raise ValueError(f"capacity_wh must be positive, got {self.capacity_wh!r}")
        for name in ("max_charge_w", "max_discharge_w", "degradation_usd_per_mwh"):
            value = getattr(self, name)
            _check_finite(name, value)
            if value < 0:
                raise ValueError(f"{name} must be zero or positive, got {value!r}")
        _check_pct("soc_pct", self.soc_pct)
        _check_pct("reserve_pct", self.reserve_pct)
        _check_finite("efficiency", self.efficiency)
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"efficiency is the round-trip efficiency, a fraction in (0, 1], got {self.efficiency!r}")
        if self.final_soc_pct is not None:
            _check_pct("final_soc_pct", self.final_soc_pct)


@dataclass(frozen=True)
class PricePoint:
    """The (forecast) price of one market interval."""

    interval_start: datetime
    price_usd_per_mwh: float


@dataclass(frozen=True)
class ScheduledInterval:
    """The plan for one interval; ``energy_wh`` is the stored energy at its start."""

    interval_start: datetime
    charge_w: float
    discharge_w: float
    energy_wh: float


@dataclass(frozen=True)
class Schedule:
    """The optimizer's answer.

    ``status`` is one of ``STATUSES``. With ``"optimal"`` the intervals hold the
    optimal plan and ``revenue_usd`` its objective value. With ``"not_solved"``
    (time limit reached) they hold the best plan found if the solver found one
    and it meets every constraint (checked here, as solvers stopped early may
    report relaxation values); otherwise, and with every other status, they
    are empty and ``revenue_usd`` is ``None``. ``"error"`` is also reported when
    a solver claims optimality for values that break a constraint.
    """

    status: str
    revenue_usd: float | None
    intervals: tuple[ScheduledInterval, ...]
    final_energy_wh: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready form, as ``vpp plan`` prints it (timestamps in ISO 8601)."""
        return {
            "status": self.status,
            "revenue_usd": self.revenue_usd,
            "final_energy_wh": self.final_energy_wh,
            "schedule": [
                {
                    "interval_start": i.interval_start.isoformat(),
                    "charge_w": i.charge_w,
                    "discharge_w": i.discharge_w,
                    "energy_wh": i.energy_wh,
                }
                for i in self.intervals
            ],
        }
