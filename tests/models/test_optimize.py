"""The battery optimizer: spec cases as a table, and every solve checked against an independent MILP.

The reference formulation below shares no code with ``models.optimize``: it
eliminates the energy variables (``E_t`` is ``E_0`` plus a cumulative sum),
works in kW/kWh, and is solved by ``scipy.optimize.milp`` (scipy's own HiGHS).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plan_inputs import H, START, STEP, battery, prices_of
from models.optimize import (
    Battery,
    PricePoint,
    Schedule,
    SolverUnavailableError,
    plan,
    relaxation_bound,
)

def highs_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


SOLVERS = ["cbc", "highs"] if highs_available() else ["cbc"]


# --- an independent reference and an explicit constraint check -------------------------------


def reference_revenue_usd(prices: list[PricePoint], b: Battery) -> float | None:
    """Optimal objective by scipy.optimize.milp on an E-free formulation; None if infeasible."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(prices)
    p = np.array([x.price_usd_per_mwh for x in prices])
    pc_kw, pd_kw = b.max_charge_w / 1e3, b.max_discharge_w / 1e3
    cap_kwh = b.capacity_wh / 1e3
    e0 = b.soc_pct / 100 * cap_kwh
    up, down = math.sqrt(b.efficiency) * H, H / math.sqrt(b.efficiency)
    # x = [c_0..c_{n-1}, d_0..d_{n-1}, b_0..b_{n-1}]; maximize => minimize the negative ($, kW -> MW).
    cost = np.concatenate([p * H / 1e3, -(p - b.degradation_usd_per_mwh) * H / 1e3, np.zeros(n)])
    lower_tri = np.tril(np.ones((n, n)))  # row t-1: sum over s < t
    energy_rows = np.hstack([up * lower_tri, -down * lower_tri, np.zeros((n, n))])
    e_lo = np.full(n, b.reserve_pct / 100 * cap_kwh - e0)
    if b.final_soc_pct is not None:
        e_lo[-1] = max(e_lo[-1], b.final_soc_pct / 100 * cap_kwh - e0)
    eye, zero = np.eye(n), np.zeros((n, n))
    constraints = [
        LinearConstraint(energy_rows, e_lo, np.full(n, cap_kwh - e0)),
        LinearConstraint(np.hstack([eye, zero, -pc_kw * eye]), -np.inf, 0.0),
        LinearConstraint(np.hstack([zero, eye, pd_kw * eye]), -np.inf, pd_kw),
    ]
    # HiGHS's absolute gap (1e-6) would swallow a whole objective of micro-dollars: solve in units of the
    # largest cost coefficient.
    scale = float(np.max(np.abs(cost))) or 1.0
    result = milp(
        cost / scale,
        constraints=constraints,
        integrality=np.concatenate([np.zeros(2 * n), np.ones(n)]),
        bounds=Bounds(np.zeros(3 * n), np.concatenate([np.full(n, pc_kw), np.full(n, pd_kw), np.ones(n)])),
        options={"mip_rel_gap": 1e-10},
    )
    if result.status == 2:
        return None
    assert result.status == 0, result.message
    return -result.fun * scale


def assert_feasible(schedule: Schedule, prices: list[PricePoint], b: Battery) -> None:
    """Every constraint of the problem, checked on the returned numbers."""
    tol_wh = 1e-6 * b.capacity_wh
    assert len(schedule.intervals) == len(prices)
    energy = b.soc_pct / 100 * b.capacity_wh
    revenue = 0.0
    for row, price in zip(schedule.intervals, prices, strict=True):
        assert row.interval_start == price.interval_start
        assert 0.0 <= row.charge_w <= b.max_charge_w
        assert 0.0 <= row.discharge_w <= b.max_discharge_w
        assert row.charge_w == 0.0 or row.discharge_w == 0.0, "charges and discharges in one interval"
        assert row.energy_wh == pytest.approx(energy, abs=tol_wh), "energy_wh is not E_t"
        energy = row.energy_wh + (math.sqrt(b.efficiency) * row.charge_w - row.discharge_w / math.sqrt(b.efficiency)) * H
        assert b.reserve_pct / 100 * b.capacity_wh - tol_wh <= energy <= b.capacity_wh + tol_wh
        revenue += (price.price_usd_per_mwh * (row.discharge_w - row.charge_w) - b.degradation_usd_per_mwh * row.discharge_w) * H / 1e6
    assert schedule.final_energy_wh == pytest.approx(energy, abs=tol_wh)
    if b.final_soc_pct is not None:
        assert energy >= b.final_soc_pct / 100 * b.capacity_wh - tol_wh
    assert schedule.revenue_usd == pytest.approx(revenue, rel=1e-9, abs=1e-12)


# --- spec cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_flat_prices_with_degradation_cost_never_cycle(solver):
    prices = prices_of(*[50.0] * 24)
    b = battery(capacity_wh=10_000.0, soc_pct=50.0, degradation_usd_per_mwh=5.0, efficiency=0.9, final_soc_pct=50.0)
    schedule = plan(prices, b, solver=solver)
    assert schedule.status == "optimal"
    assert all(row.charge_w == 0.0 and row.discharge_w == 0.0 for row in schedule.intervals)
    assert schedule.revenue_usd == 0.0


@pytest.mark.parametrize("solver", SOLVERS)
def test_flat_prices_without_final_soc_sell_down_to_reserve_and_never_buy(solver):
    prices = prices_of(*[50.0] * 24)
    b = battery(capacity_wh=10_000.0, soc_pct=50.0, reserve_pct=20.0, degradation_usd_per_mwh=5.0, efficiency=0.9)
    schedule = plan(prices, b, solver=solver)
    assert schedule.status == "optimal"
    assert all(row.charge_w == 0.0 for row in schedule.intervals)
    assert schedule.final_energy_wh == pytest.approx(2000.0)
    # 3000 Wh stored leave as 3000 * sqrt(0.9) Wh at the grid, each MWh worth 50 - 5.
    assert schedule.revenue_usd == pytest.approx(3000 * math.sqrt(0.9) * 45 / 1e6)


@pytest.mark.parametrize("solver", SOLVERS)
def test_cheap_then_expensive_charges_then_discharges(solver):
    schedule = plan(prices_of(10.0, 100.0), battery(), solver=solver)
    assert schedule.status == "optimal"
    first, second = schedule.intervals
    assert (first.charge_w, first.discharge_w, first.energy_wh) == pytest.approx((12000.0, 0.0, 0.0))
    assert (second.charge_w, second.discharge_w, second.energy_wh) == pytest.approx((0.0, 12000.0, 1000.0))
    assert schedule.final_energy_wh == pytest.approx(0.0, abs=1e-9)
    assert schedule.revenue_usd == pytest.approx((100 - 10) * 1000 / 1e6)


@pytest.mark.parametrize("solver", SOLVERS)
def test_efficiency_losses_are_split_evenly_between_charge_and_discharge(solver):
    # eta = 0.81: 12000 W for 5 min stores 0.9 * 1000 = 900 Wh, which gives 900 * 0.9 * 12 = 9720 W back.
    schedule = plan(prices_of(10.0, 100.0), battery(capacity_wh=5000.0, efficiency=0.81), solver=solver)
    assert schedule.status == "optimal"
    first, second = schedule.intervals
    assert first.charge_w == pytest.approx(12000.0)
    assert second.energy_wh == pytest.approx(900.0)
    assert second.discharge_w == pytest.approx(9720.0)
    assert schedule.revenue_usd == pytest.approx((100 * 9720 - 10 * 12000) * H / 1e6)


@pytest.mark.parametrize("solver", SOLVERS)
def test_reserve_is_never_crossed(solver):
    schedule = plan(prices_of(*[200.0] * 12), battery(soc_pct=90.0, reserve_pct=30.0), solver=solver)
    assert schedule.status == "optimal"
    assert min(row.energy_wh for row in schedule.intervals[1:]) >= 300.0 - 1e-6
    assert schedule.final_energy_wh == pytest.approx(300.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_final_soc_is_met_even_when_selling_pays(solver):
    schedule = plan(prices_of(*[200.0] * 12), battery(soc_pct=90.0, final_soc_pct=60.0), solver=solver)
    assert schedule.status == "optimal"
    assert schedule.final_energy_wh == pytest.approx(600.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_below_reserve_at_start_must_be_back_above_it_after_the_first_interval(solver):
    # 12000 W charges 1000 Wh per interval. A degradation cost makes charging more and selling it
    # back at the same price a loss, so that the least charge back to the reserve is the one optimum.
    b = battery(capacity_wh=10_000.0, soc_pct=5.0, reserve_pct=10.0, degradation_usd_per_mwh=1.0)
    schedule = plan(prices_of(30.0, 30.0, 30.0), b, solver=solver)
    assert schedule.status == "optimal"
    assert schedule.intervals[1].energy_wh >= 1000.0 - 1e-6
    assert schedule.intervals[0].charge_w == pytest.approx(6000.0)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(capacity_wh=10_000.0, soc_pct=0.0, reserve_pct=20.0),  # needs 2000 Wh in one interval, can charge 1000
        dict(capacity_wh=10_000.0, soc_pct=0.0, final_soc_pct=50.0),  # 3 intervals x 1000 Wh < 5000 Wh
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_unreachable_targets_are_reported_infeasible(solver, overrides):
    schedule = plan(prices_of(30.0, 30.0, 30.0), battery(**overrides), solver=solver)
    assert schedule == Schedule(status="infeasible", revenue_usd=None, intervals=(), final_energy_wh=None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(capacity_wh=0.0), "capacity_wh must be positive"),
        (dict(capacity_wh=math.nan), "capacity_wh must be a finite number"),
        (dict(max_charge_w=-1.0), "max_charge_w must be zero or positive"),
        (dict(max_discharge_w=math.inf), "max_discharge_w must be a finite number"),
        (dict(soc_pct=101.0), "soc_pct must be between 0 and 100"),
        (dict(reserve_pct=-1.0), "reserve_pct must be between 0 and 100"),
        (dict(efficiency=0.0), "efficiency is the round-trip efficiency"),
        (dict(efficiency=1.2), "efficiency is the round-trip efficiency"),
        (dict(degradation_usd_per_mwh=-3.0), "degradation_usd_per_mwh must be zero or positive"),
        (dict(final_soc_pct=150.0), "final_soc_pct must be between 0 and 100"),
        (dict(soc_pct="50"), "soc_pct must be a finite number"),
    ],
)
def test_battery_rejects_bad_parameters_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        battery(**overrides)


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ([], "prices is empty"),
        ([PricePoint(START, 1.0), PricePoint(START + 2 * STEP, 1.0)], r"prices\[1\] starts at .* not 5 minutes after"),
        ([PricePoint(START, 1.0), PricePoint(START, 1.0)], "not 5 minutes after"),
        ([PricePoint(START, math.nan)], r"prices\[0\].price_usd_per_mwh must be a finite number"),
    ],
)
def test_plan_rejects_bad_prices(prices, message):
    with pytest.raises(ValueError, match=message):
        plan(prices, battery(), solver="cbc")


def test_plan_rejects_an_unknown_solver():
    with pytest.raises(ValueError, match="unknown solver 'gurobi'"):
        plan(prices_of(1.0), battery(), solver="gurobi")


def test_highs_runs_or_says_what_to_install():
    if highs_available():
        assert plan(prices_of(10.0, 100.0), battery(), solver="highs").status == "optimal"
    else:
        with pytest.raises(SolverUnavailableError, match="pip install highspy"):
            plan(prices_of(10.0, 100.0), battery(), solver="highs")


def negative_price_day() -> tuple[list[PricePoint], Battery]:
    """288 deeply negative prices, low efficiency, no degradation cost: the binaries bind and the search is long."""
    rng = np.random.default_rng(2)
    prices = prices_of(*rng.normal(-100.0, 80.0, 288))
    return prices, Battery(2e7, 5e6, 4e6, 90.0, 10.0, 0.7, 0.0, 50.0)


@pytest.mark.parametrize("time_limit_s", [0.001, 0.02, 0.1])
@pytest.mark.parametrize("solver", SOLVERS)
def test_a_time_limit_gives_a_feasible_plan_or_none_never_a_false_infeasible(solver, time_limit_s):
    # Stopped early, CBC can say "Integer infeasible" and both solvers can hand
    # back relaxation values; neither may come out of plan.
    prices, b = negative_price_day()
    schedule = plan(prices, b, solver=solver, time_limit_s=time_limit_s)
    assert schedule.status in ("optimal", "not_solved")
    if schedule.intervals:
        assert_feasible(schedule, prices, b)
    else:
        assert schedule.revenue_usd is None


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_day_of_deeply_negative_prices_matches_the_reference(solver):
    # Nearly every interval lies below -deg eta / (1 - eta): the binaries bind and are all in the model.
    prices, b = negative_price_day()
    prices = prices[:96]
    schedule = plan(prices, b, solver=solver)
    assert schedule.status == "optimal"
    assert_feasible(schedule, prices, b)
    assert math.isclose(schedule.revenue_usd, reference_revenue_usd(prices, b), rel_tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    charge=st.floats(0.0, 1.0),
    discharge=st.floats(0.0, 1.0),
    efficiency=st.floats(0.5, 1.0),
    degradation=st.floats(0.0, 40.0),
    price=st.floats(-3000.0, 3000.0),
)
def test_netting_keeps_the_energy_and_loses_no_revenue_exactly_where_the_model_has_no_binary(
    charge, discharge, efficiency, degradation, price
):
    from models.optimize import _burning_pays_below, _net

    b = battery(efficiency=efficiency, degradation_usd_per_mwh=degradation)
    c, d = _net(charge, discharge, efficiency)
    assert c >= 0.0 and d >= 0.0 and min(c, d) == 0.0 and c <= charge and d <= discharge
    root = math.sqrt(efficiency)
    assert root * c - d / root == pytest.approx(root * charge - discharge / root, abs=1e-12)
    revenue = lambda c_, d_: (price - degradation) * d_ - price * c_  # noqa: E731
    gain = revenue(c, d) - revenue(charge, discharge)
    scale = 1e-9 * (abs(price) + degradation)
    threshold = _burning_pays_below(b)
    if price >= threshold:
        assert gain >= -scale
    elif price < threshold - 1.0 and min(charge, discharge) > 1e-3 and efficiency < 1.0 - 1e-6:
        assert gain < 0.0  # well below it burning pays: netting loses (nothing burns at an efficiency of ~1)


def test_schedule_as_dict_is_the_cli_json_shape():
    schedule = plan(prices_of(10.0, 100.0), battery(), solver="cbc")
    doc = json.loads(json.dumps(schedule.as_dict()))
    assert set(doc) == {"status", "revenue_usd", "final_energy_wh", "schedule"}
    assert doc["schedule"][0] == {
        "interval_start": "2024-06-01T00:00:00+00:00",
        "charge_w": pytest.approx(12000.0),
        "discharge_w": 0.0,
        "energy_wh": 0.0,
    }


# --- every solve against the independent reference --------------------------------------------


@st.composite
def instances(draw):
    n = draw(st.integers(4, 24))
    # Prices in cents, as markets quote them: a price of 1e-5 $/MWh makes the whole objective smaller than
    # the solvers' absolute tolerances, and such instances compare tolerances, not models (seen in CI).
    values = draw(st.lists(st.integers(-30_000, 50_000).map(lambda cents: cents / 100), min_size=n, max_size=n))
    capacity_wh = draw(st.floats(1e3, 1e8))
    # Power as a multiple of capacity per hour, and percentages, on a grid: a
    # target missed by 1e-7 Wh is infeasible exactly but feasible within any
    # solver's tolerance, and such knife-edge instances test the tolerance, not the model.
    c_rate = st.integers(0, 80).map(lambda k: k / 20)
    pct = st.integers(0, 200).map(lambda k: k / 2)
    b = Battery(
        capacity_wh=capacity_wh,
        max_charge_w=draw(c_rate) * capacity_wh,
        max_discharge_w=draw(c_rate) * capacity_wh,
        soc_pct=draw(pct),
        reserve_pct=draw(pct.filter(lambda x: x <= 60)),
        efficiency=draw(st.floats(0.5, 1.0)),
        degradation_usd_per_mwh=draw(st.floats(0.0, 40.0)),
        final_soc_pct=draw(st.none() | pct),
    )
    return prices_of(*values), b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=instances(), solver=st.sampled_from(SOLVERS))
def test_plan_matches_an_independent_milp_and_meets_every_constraint(instance, solver):
    prices, b = instance
    schedule = plan(prices, b, solver=solver)
    expected = reference_revenue_usd(prices, b)
    if expected is None:
        assert schedule.status == "infeasible"
        assert schedule.intervals == () and schedule.revenue_usd is None
        assert relaxation_bound(prices, b, solver=solver) is None  # feasible exactly when the relaxation is
        return
    assert schedule.status == "optimal"
    assert_feasible(schedule, prices, b)
    # Relative 1e-6; near zero, 1e-6 of the objective's natural unit (one interval at full power and the top price).
    unit_usd = max(b.max_charge_w, b.max_discharge_w) * H / 1e6 * max(abs(p.price_usd_per_mwh) for p in prices)
    assert math.isclose(schedule.revenue_usd, expected, rel_tol=1e-6, abs_tol=1e-6 * unit_usd)
    bound = relaxation_bound(prices, b, solver=solver)
    assert bound is not None and bound >= schedule.revenue_usd - 1e-6 * max(abs(bound), 1e-3)


# --- vpp plan ----------------------------------------------------------------------------------

PLAN_ARGS = [
    "--capacity-wh", "1000", "--max-charge-w", "12000", "--max-discharge-w", "12000",
    "--soc-pct", "0", "--reserve-pct", "0", "--efficiency", "1", "--degradation-usd-per-mwh", "0",
]  # fmt: skip


def run_plan(tmp_path, csv_text: str, *extra: str) -> int:
    from cli.main import main

    path = tmp_path / "prices.csv"
    path.write_text(csv_text)
    return main(["plan", "--prices", str(path), *PLAN_ARGS, *extra])


def test_cli_prints_the_schedule_as_json(tmp_path, capsys):
    text = "interval_start,price_usd_per_mwh\n2024-06-01T00:00:00Z,10\n2024-06-01T00:05:00Z,100\n"
    assert run_plan(tmp_path, text) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "optimal"
    assert doc["revenue_usd"] == pytest.approx(0.09)
    assert [row["discharge_w"] for row in doc["schedule"]] == pytest.approx([0.0, 12000.0])


def test_cli_prints_an_infeasible_result_and_exits_1(tmp_path, capsys):
    text = "interval_start,price_usd_per_mwh\n2024-06-01T00:00:00Z,10\n"
    assert run_plan(tmp_path, text, "--final-soc-pct", "100", "--max-charge-w", "1") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"status": "infeasible", "revenue_usd": None, "final_energy_wh": None, "schedule": []}
    assert "status infeasible" in captured.err


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("start,price\n2024-06-01T00:00:00Z,1\n", "prices.csv:1: expected the header"),
        ("interval_start,price_usd_per_mwh\n2024-06-01T00:00:00Z,abc\n", "prices.csv:2: price_usd_per_mwh 'abc'"),
        ("interval_start,price_usd_per_mwh\nyesterday,1\n", "prices.csv:2: interval_start 'yesterday'"),
        ("interval_start,price_usd_per_mwh\n2024-06-01T00:00:00Z,1,2\n", "prices.csv:2: expected 2 fields"),
        (
            "interval_start,price_usd_per_mwh\n2024-06-01T00:00:00Z,1\n2024-06-01T00:05:00Z,1\n2024-06-01T00:15:00Z,1\n",
            "prices.csv:4: interval_start .* is not 5 minutes after",
        ),
        ("interval_start,price_usd_per_mwh\n", "no prices after the header"),
    ],
)
def test_cli_reports_bad_price_files_by_line(tmp_path, capsys, csv_text, message):
    assert run_plan(tmp_path, csv_text) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vpp: error: ")
    assert len(captured.err.strip().splitlines()) == 1
    assert re.search(message, captured.err)


def test_cli_reports_bad_battery_parameters(tmp_path, capsys):
    text = "interval_start,price_usd_per_mwh\n2024-06-01T00:00:00Z,10\n"
    assert run_plan(tmp_path, text, "--efficiency", "1.5") == 1
    assert "invalid battery: efficiency" in capsys.readouterr().err
