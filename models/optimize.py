"""Battery schedule optimizer: one battery node over a horizon of market intervals (5 minutes unless given).

The model is a small mixed-integer program, built with PuLP and solved by the
solver the caller names (``"cbc"``, bundled with PuLP, or ``"highs"``, which
needs the ``highspy`` package). For intervals ``t = 0..T-1`` of ``h`` hours (``1/12`` for 5 minutes)
with forecast price ``p_t`` ($/MWh):

* charge ``c_t`` in ``[0, Pc]`` W and discharge ``d_t`` in ``[0, Pd]`` W, never
  both in one interval: a binary ``b_t`` with ``c_t <= Pc b_t`` and
  ``d_t <= Pd (1 - b_t)``;
* stored energy ``E_0 = soc_pct/100 C`` and
  ``E_{t+1} = E_t + sqrt(eta) c_t h - d_t h / sqrt(eta)``;
* ``reserve_pct/100 C <= E_t <= C`` for ``t = 1..T``. ``E_0`` is given and is
  not constrained: a battery that starts below its reserve must be back at or
  above it by the end of the first interval, and if it cannot charge that much
  in one interval the problem is infeasible (status ``"infeasible"``);
* ``E_T >= final_soc_pct/100 C`` when a final SoC is given;
* maximize ``sum_t p_t (d_t - c_t) h / 1e6 - deg sum_t d_t h / 1e6`` ($), with
  ``deg`` the degradation cost in $ per MWh discharged.

Internally powers are scaled by ``max(Pc, Pd)``, energy by ``C`` and the
objective by its largest coefficient so that solver tolerances mean the same
thing for a 5 kWh home battery and a 100 MWh plant; results are reported in W,
Wh and $. The optimality gap is closed to ``1e-9`` (relative and absolute, in
scaled units), not left at a solver's default (HiGHS stops at 1e-4).

Only the intervals that need it get a binary. Charging and discharging at
once burns energy through the losses, which pays only when ``p_t < -deg eta /
(1 - eta)`` (never when ``eta = 1``): elsewhere an interval that does both can
be netted to one direction with the same stored energy and no less revenue
(see ``_burning_pays_below``), so the model leaves ``b_t`` out there and nets
the answer. The optimum is the same, exactly; the binaries left are the ones
that can bind.

Speed (bench/optimize.py, 288 intervals): a typical day, where few prices if
any are that low, is nearly an LP (0.04-0.09 s). On days of deeply negative
prices the binaries bind and branch-and-bound does real work: 0.25-1.05 s with
HiGHS, 0.3-2.1 s with CBC, which finds the optimum at once and spends the rest
proving it. Pass ``time_limit_s`` to bound a solve (status ``"not_solved"``
with the best plan found, netted like an optimal one).

``Schedule.intervals[t].energy_wh`` is ``E_t``, the energy at the START of
interval ``t``; ``Schedule.final_energy_wh`` is ``E_T``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pulp

__all__ = [
    "INTERVAL",
    "INTERVAL_H",
    "SOLVERS",
    "STATUSES",
    "Battery",
    "PricePoint",
    "Schedule",
    "ScheduledInterval",
    "SolverUnavailableError",
    "plan",
    "relaxation_bound",
]

from models.battery import (  # noqa: E402  (the contract, re-exported: callers import it from here too)
    INTERVAL,
    INTERVAL_H,
    SOLVERS,
    STATUSES,
    Battery,
    PricePoint,
    Schedule,
    ScheduledInterval,
    SolverUnavailableError,
    _check_finite,
)
from models.price_series import describe_interval  # noqa: E402

# Scaled units: powers in [0, 1], energy as a fraction of capacity, objective
# coefficients in [-1, 1]. A gap of 1e-9 there is far below a cent.
_GAP = 1e-9
# Solver noise below this (in scaled units) is reported as exactly zero.
_SNAP = 1e-9
# Search settings, not tolerances (bench/optimize.py): CBC's cheap strategy (less strong branching
# at the root) takes about a third off its negative-price days; HiGHS's RINS/RENS sub-MIPs took
# 60-75 % of its time on them and never found a better plan than its other heuristics had.
_CBC_OPTIONS = ("strategy", "0")
_HIGHS_OPTIONS = {"mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False}


def _check_prices(prices: Sequence[PricePoint], interval: timedelta, charge_prices: Sequence[float] | None) -> float:
    """The interval in hours, after checking that ``prices`` are consecutive intervals of that length."""
    if interval <= timedelta(0):
        raise ValueError(f"interval must be positive, got {interval}")
    length = describe_interval(interval)
    if len(prices) == 0:
        raise ValueError(f"prices is empty: give at least one {length} interval")
    for k, point in enumerate(prices):
        _check_finite(f"prices[{k}].price_usd_per_mwh", point.price_usd_per_mwh)
        if k and point.interval_start - prices[k - 1].interval_start != interval:
            raise ValueError(
                f"prices[{k}] starts at {point.interval_start.isoformat()}, "
                f"not {length} after prices[{k - 1}] ({prices[k - 1].interval_start.isoformat()}): "
                f"give consecutive {length} intervals in order"
            )
    if charge_prices is not None:
        if len(charge_prices) != len(prices):
            raise ValueError(f"charge_prices has {len(charge_prices)} values for {len(prices)} intervals")
        for k, value in enumerate(charge_prices):
            _check_finite(f"charge_prices[{k}]", value)
    return interval / timedelta(hours=1)


def _make_solver(solver: str, time_limit_s: float | None):
    if solver == "cbc":
        # The CBC binary bundled with PuLP 3, driven through COIN_CMD (PULP_CBC_CMD
        # is deprecated); without it, a `cbc` on PATH (PuLP 4's `pulp[cbc]`).
        bundled = getattr(pulp.PULP_CBC_CMD, "pulp_cbc_path", None)
        path = bundled if bundled and os.path.isfile(bundled) else None
        made = pulp.COIN_CMD(msg=False, path=path, timeLimit=time_limit_s, gapRel=_GAP, gapAbs=_GAP,
                             options=list(_CBC_OPTIONS))
        if not made.available():
            raise SolverUnavailableError(
                "the 'cbc' solver binary was not found: reinstall pulp (pip install pulp==3.3.2 bundles it)"
            )
        return made
    if solver == "highs":
        made = pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=_GAP, gapAbs=_GAP, **_HIGHS_OPTIONS)
        if not made.available():
            raise SolverUnavailableError(
                "the 'highs' solver needs the highspy package (pip install highspy==1.15.1); or use solver 'cbc'"
            )
        return made
    raise ValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")


@dataclass(frozen=True)
class _Model:
    problem: pulp.LpProblem
    charge: list[pulp.LpVariable]
    discharge: list[pulp.LpVariable]
    energy: list[pulp.LpVariable]  # E_1..E_T as a fraction of capacity
    power_unit_w: float


def _burning_pays_below(battery: Battery) -> float:
    """The price below which charging and discharging in one interval pays: ``-deg eta / (1 - eta)``.

    Doing both at once moves no more energy than netting them to one
    direction, and the netted interval earns at least as much exactly when
    ``p (1 - eta) + deg eta >= 0``: it saves ``d (p (1 - eta) / eta + deg)``
    (net charging, ``c - d / eta``) or ``c (p (1 - eta) + deg eta)`` (net
    discharging, ``d - eta c``). Only below this price can the binaries bind.
    """
    eta, deg = battery.efficiency, battery.degradation_usd_per_mwh
    return -math.inf if eta == 1.0 else -deg * eta / (1.0 - eta)


def _build(prices: Sequence[PricePoint], battery: Battery, *, relaxed: bool, interval_h: float = INTERVAL_H,
           charge_prices: Sequence[float] | None = None) -> _Model:
    n = len(prices)
    price = [p.price_usd_per_mwh for p in prices]
    buy = list(price if charge_prices is None else charge_prices)
    unit_w = max(battery.max_charge_w, battery.max_discharge_w) or 1.0
    pc = battery.max_charge_w / unit_w
    pd = battery.max_discharge_w / unit_w
    root = math.sqrt(battery.efficiency)
    step = interval_h * unit_w / battery.capacity_wh  # fraction of capacity moved by 1 unit of power in one interval
    deg = battery.degradation_usd_per_mwh
    objective_unit = max(max(abs(x) for x in price + buy), deg) or 1.0
    threshold = _burning_pays_below(battery)

    problem = pulp.LpProblem("battery_schedule", pulp.LpMaximize)
    charge = [problem.add_variable(f"c_{t}", 0, pc) for t in range(n)]
    discharge = [problem.add_variable(f"d_{t}", 0, pd) for t in range(n)]
    mode_kind = pulp.LpContinuous if relaxed else pulp.LpBinary
    energy = [problem.add_variable(f"e_{t + 1}", battery.reserve_pct / 100.0, 1.0) for t in range(n)]

    problem += pulp.lpSum(
        ((price[t] - deg) * discharge[t] - buy[t] * charge[t]) / objective_unit for t in range(n)
    )
    previous: pulp.LpVariable | float = battery.soc_pct / 100.0
    for t in range(n):
        # Where charging and discharging at once cannot pay, no binary: a solution that does both
        # is netted afterwards (_net) to one that does not, with the same energy and no less revenue.
        if min(price[t], buy[t]) < threshold and pc > 0 and pd > 0:
            mode = problem.add_variable(f"b_{t}", 0, 1, cat=mode_kind)
            problem += charge[t] <= pc * mode, f"charge_mode_{t}"
            problem += discharge[t] <= pd * (1 - mode), f"discharge_mode_{t}"
        problem += energy[t] == previous + root * step * charge[t] - step / root * discharge[t], f"energy_{t + 1}"
        previous = energy[t]
    if battery.final_soc_pct is not None:
        problem += energy[-1] >= battery.final_soc_pct / 100.0, "final_soc"
    return _Model(problem, charge, discharge, energy, unit_w)


def _net(charge: float, discharge: float, efficiency: float) -> tuple[float, float]:
    """Charge and discharge of one interval netted to one direction, the stored energy unchanged."""
    if charge <= 0.0 or discharge <= 0.0:
        return charge, discharge
    if efficiency * charge >= discharge:
        return charge - discharge / efficiency, 0.0
    return 0.0, discharge - efficiency * charge


def _revenue_usd(prices: Sequence[PricePoint], charge_w, discharge_w, deg: float, interval_h: float = INTERVAL_H,
                 charge_prices: Sequence[float] | None = None) -> float:
    buy = [p.price_usd_per_mwh for p in prices] if charge_prices is None else charge_prices
    return sum(
        (p.price_usd_per_mwh * d - b * c - deg * d) * interval_h / 1e6
        for p, b, c, d in zip(prices, buy, charge_w, discharge_w, strict=True)
    )


def _solve(model: _Model, solver: str, time_limit_s: float | None) -> str:
    backend = _make_solver(solver, time_limit_s)
    try:
        model.problem.solve(backend)
    except pulp.PulpSolverError:
        return "error"
    status, found = model.problem.status, model.problem.sol_status
    if status == pulp.LpStatusOptimal:
        return "optimal" if found == pulp.LpSolutionOptimal else "not_solved"
    if status == pulp.LpStatusInfeasible:
        return "infeasible"
    if status == pulp.LpStatusUnbounded:
        return "unbounded"
    return "not_solved"


def _has_values(model: _Model) -> bool:
    return all(v.varValue is not None for v in (*model.charge, *model.discharge, *model.energy))


def _powers_w(model: _Model, battery: Battery) -> tuple[list[float], list[float]]:
    """Charge and discharge (W) as solved, netted per interval; solver noise below ``_SNAP`` is zero."""
    charge_w, discharge_w = [], []
    for c_var, d_var in zip(model.charge, model.discharge, strict=True):
        c, d = _net(c_var.varValue, d_var.varValue, battery.efficiency)
        charge_w.append(0.0 if c < _SNAP else min(c * model.power_unit_w, battery.max_charge_w))
        discharge_w.append(0.0 if d < _SNAP else min(d * model.power_unit_w, battery.max_discharge_w))
    return charge_w, discharge_w


def _meets_constraints(charge_w, discharge_w, energy_wh, battery: Battery, interval_h: float) -> bool:
    """Whether a solver's answer, as reported, is a schedule of the problem (within 1e-6 of its scale).

    A time-limited CBC or HiGHS run can hand back relaxation or partial values
    as its "solution"; those must not reach a bid.
    """
    tol_wh = 1e-6 * battery.capacity_wh
    tol_w = 1e-6 * max(battery.max_charge_w, battery.max_discharge_w)
    root = math.sqrt(battery.efficiency)
    low_wh = battery.reserve_pct / 100.0 * battery.capacity_wh - tol_wh
    for t, (c, d) in enumerate(zip(charge_w, discharge_w, strict=True)):
        if min(c, d) > tol_w:
            return False
        after = energy_wh[t] + (root * c - d / root) * interval_h
        if abs(after - energy_wh[t + 1]) > tol_wh or not low_wh <= energy_wh[t + 1] <= battery.capacity_wh + tol_wh:
            return False
    final = battery.final_soc_pct
    return final is None or energy_wh[-1] >= final / 100.0 * battery.capacity_wh - tol_wh


def _confirm_infeasible(prices, battery: Battery, solver: str, time_limit_s: float | None, **shape) -> str:
    """Status to report when the MILP solver said "infeasible".

    The problem is feasible exactly when its LP relaxation is: an interval that
    charges and discharges at once can be netted to one direction with the same
    energy change (``c - d/eta`` charging, or ``d - eta c`` discharging). CBC
    stopped by a time limit during preprocessing reports "Integer infeasible"
    for feasible problems, so the relaxation has the last word.
    """
    relaxed = _solve(_build(prices, battery, relaxed=True, **shape), solver, time_limit_s)
    if relaxed == "infeasible":
        return "infeasible"
    if relaxed == "optimal" and time_limit_s is None:
        return "error"
    return "not_solved"


def plan(
    prices: Sequence[PricePoint],
    battery: Battery,
    *,
    solver: str = "cbc",
    time_limit_s: float | None = None,
    interval: timedelta = INTERVAL,
    charge_prices: Sequence[float] | None = None,
) -> Schedule:
    """The revenue-maximizing charge/discharge schedule over ``prices`` (see the module docstring).

    ``prices`` are consecutive intervals of ``interval`` (5 minutes unless
    given). ``charge_prices``, when given, are what charging costs in each
    interval while ``prices`` are what discharging earns (a risk-aware plan
    charges at a high quantile and sells at a low one); ``revenue_usd`` is
    then valued the same way. Raises ``ValueError`` for bad
    input or an unknown solver and ``SolverUnavailableError`` when the solver
    cannot run here; every solver outcome comes back as ``Schedule.status``.
    """
    interval_h = _check_prices(prices, interval, charge_prices)
    shape = {"interval_h": interval_h, "charge_prices": charge_prices}
    model = _build(prices, battery, relaxed=False, **shape)
    status = _solve(model, solver, time_limit_s)
    if status == "infeasible":
        status = _confirm_infeasible(prices, battery, solver, time_limit_s, **shape)
    if status not in ("optimal", "not_solved") or not _has_values(model):
        return Schedule(status=status, revenue_usd=None, intervals=())
    charge_w, discharge_w = _powers_w(model, battery)
    energy_wh = [battery.soc_pct / 100.0 * battery.capacity_wh]
    energy_wh += [v.varValue * battery.capacity_wh for v in model.energy]
    if not _meets_constraints(charge_w, discharge_w, energy_wh, battery, interval_h):
        # An "optimal" answer that breaks a constraint is a solver failure; a
        # time-limited one is simply no schedule yet.
        return Schedule(status="error" if status == "optimal" else status, revenue_usd=None, intervals=())
    intervals = tuple(
        ScheduledInterval(p.interval_start, c, d, e)
        for p, c, d, e in zip(prices, charge_w, discharge_w, energy_wh, strict=False)
    )
    revenue = _revenue_usd(prices, charge_w, discharge_w, battery.degradation_usd_per_mwh, **shape)
    return Schedule(status=status, revenue_usd=revenue, intervals=intervals, final_energy_wh=energy_wh[-1])


def relaxation_bound(
    prices: Sequence[PricePoint],
    battery: Battery,
    *,
    solver: str = "cbc",
    time_limit_s: float | None = None,
    interval: timedelta = INTERVAL,
) -> float | None:
    """Upper bound on ``plan``'s revenue ($): the same model with the binaries relaxed to [0, 1].

    ``None`` when the relaxation has no optimal solution (an infeasible
    relaxation means ``plan`` is infeasible too). Useful as a gap reference and as the
    baseline the benchmark compares ``plan`` against.
    """
    interval_h = _check_prices(prices, interval, None)
    model = _build(prices, battery, relaxed=True, interval_h=interval_h)
    if _solve(model, solver, time_limit_s) != "optimal":
        return None
    unit = model.power_unit_w
    return _revenue_usd(
        prices,
        [v.varValue * unit for v in model.charge],
        [v.varValue * unit for v in model.discharge],
        battery.degradation_usd_per_mwh,
        interval_h,
    )
