"""Bids from a schedule's first interval: the rule's cases as a table, its invariants over real plans."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plan_inputs
from plan_inputs import H, START, STEP, prices_of
from models.bids import Bid, BidPair, build_bid, net_quantity_w
from models.optimize import Battery, Schedule, ScheduledInterval, plan

def battery(**overrides) -> Battery:
    """10 kWh, half full, with a degradation cost of 5 $/MWh: a battery that bids."""
    return plan_inputs.battery(**{"capacity_wh": 10_000.0, "soc_pct": 50.0, "degradation_usd_per_mwh": 5.0, **overrides})


def schedule_of(b: Battery, *powers: tuple[float, float]) -> Schedule:
    """A schedule from (charge_w, discharge_w) per interval, energies by the model's recursion."""
    energy = b.soc_pct / 100 * b.capacity_wh
    rows = []
    for k, (charge_w, discharge_w) in enumerate(powers):
        rows.append(ScheduledInterval(START + k * STEP, charge_w, discharge_w, energy))
        energy += (math.sqrt(b.efficiency) * charge_w - discharge_w / math.sqrt(b.efficiency)) * H
    return Schedule("optimal", 0.0, tuple(rows), energy)


# --- the rule, case by case --------------------------------------------------------------------

CASES = [
    pytest.param(
        battery(soc_pct=10.0),  # 1000 Wh: all of it goes in one interval at 12000 W
        [(0.0, 12_000.0), (0.0, 0.0), (0.0, 0.0)],
        [100.0, 20.0, 30.0],
        (BidPair(25.0, 12_000.0),),  # floor = min(100, 5 + 20 / 1); no power left for an extra sale
        id="discharge-at-full-power-sells-above-replacement-cost",
    ),
    pytest.param(
        battery(soc_pct=0.0, capacity_wh=1000.0, degradation_usd_per_mwh=0.0),
        [(12_000.0, 0.0), (0.0, 12_000.0)],
        [10.0, 100.0],
        (BidPair(100.0, -12_000.0),),  # cap = max(10, 1 * (100 - 0)); the battery is then full
        id="charge-buys-up-to-the-value-of-the-energy-later",
    ),
    pytest.param(
        battery(soc_pct=0.0, capacity_wh=1000.0, efficiency=0.81, degradation_usd_per_mwh=10.0),
        [(6_000.0, 0.0), (0.0, 5_000.0)],
        [10.0, 100.0],
        (BidPair(0.0, -6_000.0), BidPair(72.9, -6_000.0)),  # cap = 0.81 * (100 - 10); extra at min(0, 10)
        id="charge-with-room-adds-a-purchase-at-non-positive-prices",
    ),
    pytest.param(
        battery(soc_pct=100.0),
        [(0.0, 6_000.0), (0.0, 0.0), (0.0, 0.0)],
        [80.0, 90.0, 60.0],
        (BidPair(65.0, 6_000.0), BidPair(90.0, 6_000.0)),  # floor min(80, 5 + 60); extra above every forecast
        id="partial-discharge-adds-a-scarcity-sale",
    ),
    pytest.param(
        battery(soc_pct=100.0),
        [(0.0, 6_000.0), (0.0, 0.0)],
        [90.0, 88.0],
        (BidPair(90.0, 12_000.0),),  # floor min(90, 93) = 90 = max price: the blocks merge
        id="extra-sale-at-the-planned-price-is-merged",
    ),
    pytest.param(
        battery(final_soc_pct=50.0),
        [(0.0, 0.0), (0.0, 0.0)],
        [50.0, 50.0],
        (BidPair(0.0, -12_000.0),),  # nothing to spare above the final SoC; room to store energy paid for
        id="idle-at-final-soc-only-buys-when-paid-to",
    ),
    pytest.param(
        battery(soc_pct=50.0, reserve_pct=20.0),
        [(0.0, 0.0), (0.0, 0.0)],
        [-20.0, 30.0],
        (BidPair(-20.0, -12_000.0), BidPair(30.0, 12_000.0)),
        id="idle-with-room-both-ways-offers-both-extras",
    ),
    pytest.param(
        battery(soc_pct=100.0, reserve_pct=100.0),
        [(0.0, 0.0)],
        [50.0],
        (),
        id="idle-without-room-does-not-bid",
    ),
    pytest.param(
        battery(soc_pct=50.0, degradation_usd_per_mwh=0.0),
        [(0.0, 0.0), (0.0, 0.0)],
        [0.0, 0.0],
        (BidPair(0.0, -12_000.0),),  # the extra sale at 0 would cross the purchase at 0: dropped
        id="idle-extras-that-would-cross-keep-the-purchase",
    ),
]


@pytest.mark.parametrize(("b", "powers", "values", "pairs"), CASES)
def test_bid_rule(b, powers, values, pairs):
    bid = build_bid(schedule_of(b, *powers), prices_of(*values), b)
    assert bid.interval_start == START
    assert len(bid.pairs) == len(pairs)
    for got, want in zip(bid.pairs, pairs, strict=True):
        assert got.price_usd_per_mwh == pytest.approx(want.price_usd_per_mwh)
        assert got.quantity_w == pytest.approx(want.quantity_w)


@pytest.mark.parametrize(
    ("price", "expected_w"),
    [(-50.0, -12_000.0), (0.0, -12_000.0), (10.0, 0.0), (25.0, 6_000.0), (89.9, 6_000.0), (90.0, 12_000.0)],
)
def test_net_quantity_adds_up_the_blocks_a_clearing_price_dispatches(price, expected_w):
    bid = Bid(START, (BidPair(0.0, -12_000.0), BidPair(25.0, 6_000.0), BidPair(90.0, 6_000.0)))
    assert net_quantity_w(bid, price) == expected_w


def test_a_schedule_without_intervals_cannot_be_bid():
    with pytest.raises(ValueError, match="status 'infeasible'"):
        build_bid(Schedule("infeasible", None, ()), prices_of(1.0), battery())


def test_prices_must_be_the_ones_the_schedule_was_planned_with():
    b = battery()
    with pytest.raises(ValueError, match="prices do not match the schedule"):
        build_bid(schedule_of(b, (0.0, 0.0), (0.0, 0.0)), prices_of(1.0), b)


# --- invariants over real plans ----------------------------------------------------------------


@st.composite
def planned(draw):
    n = draw(st.integers(1, 12))
    values = draw(st.lists(st.floats(-200.0, 400.0, allow_nan=False), min_size=n, max_size=n))
    capacity_wh = draw(st.floats(1e3, 1e7))
    c_rate = st.integers(0, 80).map(lambda k: k / 20)
    pct = st.integers(0, 100).map(float)
    reserve = draw(pct.filter(lambda x: x <= 50))
    b = Battery(
        capacity_wh=capacity_wh,
        max_charge_w=draw(c_rate) * capacity_wh,
        max_discharge_w=draw(c_rate) * capacity_wh,
        soc_pct=draw(pct.filter(lambda x: x >= reserve)),
        reserve_pct=reserve,
        efficiency=draw(st.floats(0.5, 1.0)),
        degradation_usd_per_mwh=draw(st.floats(0.0, 40.0)),
        final_soc_pct=draw(st.none() | pct),
    )
    prices = prices_of(*values)
    return prices, b, plan(prices, b, solver="cbc")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planned())
def test_bids_are_monotone_deliverable_and_include_the_plan(case):
    prices, b, schedule = case
    if schedule.status != "optimal":
        return
    bid = build_bid(schedule, prices, b)
    assert bid == build_bid(schedule, prices, b)  # deterministic
    first = schedule.intervals[0]
    assert len(bid.pairs) <= 3
    assert bid.pairs or (first.charge_w == 0 and first.discharge_w == 0)

    buys = [p for p in bid.pairs if p.quantity_w < 0]
    sells = [p for p in bid.pairs if p.quantity_w > 0]
    assert len(buys) + len(sells) == len(bid.pairs), "a zero-quantity block"
    assert [p.price_usd_per_mwh for p in bid.pairs] == sorted(p.price_usd_per_mwh for p in bid.pairs)
    if buys and sells:
        assert max(p.price_usd_per_mwh for p in buys) < min(p.price_usd_per_mwh for p in sells)

    # Quantities within the power limits, and fully dispatched blocks stay within the energy bounds.
    sold_w, bought_w = sum(p.quantity_w for p in sells), -sum(p.quantity_w for p in buys)
    slack = 1e-6 * max(b.max_charge_w, b.max_discharge_w, 1.0)
    assert sold_w <= b.max_discharge_w + slack
    assert bought_w <= b.max_charge_w + slack
    tol_wh = 1e-6 * b.capacity_wh
    assert first.energy_wh - sold_w * H / math.sqrt(b.efficiency) >= b.reserve_pct / 100 * b.capacity_wh - tol_wh
    assert first.energy_wh + bought_w * H * math.sqrt(b.efficiency) <= b.capacity_wh + tol_wh

    # Monotone: the net dispatch never falls as the clearing price rises.
    grid = sorted({p.price_usd_per_mwh + d for p in bid.pairs for d in (-1e-6, 0.0, 1e-6)} | {-1e4, 1e4})
    dispatched = [net_quantity_w(bid, price) for price in grid]
    assert all(a <= b_ + 1e-9 for a, b_ in zip(dispatched, dispatched[1:], strict=False))

    # At its own forecast price the plan's quantity is dispatched.
    at_forecast = net_quantity_w(bid, prices[0].price_usd_per_mwh)
    if first.discharge_w > 0:
        assert at_forecast >= first.discharge_w - slack
    if first.charge_w > 0:
        assert at_forecast <= -first.charge_w + slack
