"""The live autobidder plans on the forecast's uncertainty when asked to (``autobidder_risk_quantiles``).

With the setting on and a forecast that carries p10 and p90 (the day-ahead model's), the optimize
request sells at p10 and buys at p90, as ``vpp plan --risk-quantiles`` does offline; the bid is sized
and priced from that plan. A forecast without quantiles (persistence, XGBoost) is planned on its point
forecast, and without the setting the quantiles are not used.
"""

from __future__ import annotations

import pytest

from flows.autobidder.flow import params_from
from flows.autobidder.logic import BidderParams, BidderState, Emitted
from flows.optimize_worker.flow import answer_optimize
from vpp.config import Settings

NODE = "us/ca"
S = 1_767_225_600_000  # 2026-01-01T00:00Z
STEP = 3_600_000  # an hourly market


def _optimize_request_after(forecast: dict, *, risk: bool) -> tuple[BidderState, dict]:
    state = BidderState(NODE, BidderParams.for_market(STEP, horizon_ms=4 * STEP, risk_quantiles=risk))
    state.on_aggregate({"node_path": NODE, "window_start": S - 60_000, "window_end": S - 50_000,
                        "capacity_wh": 100_000.0, "soc_pct": 50.0, "energy_available_wh": 40_000.0,
                        "discharge_available_w": 50_000.0, "charge_available_w": 50_000.0})
    out = Emitted()
    state.on_prices([{"pricing_node": "DE", "interval_start": S, "interval_end": S + STEP, "price_usd_per_mwh": 40.0}],
                    0, out)
    (request,) = out.forecast_requests
    out = Emitted()
    state.on_forecast({"request_id": request["request_id"], "node_path": NODE, "interval_start": S + 2 * STEP,
                       "method": "lear", "detail": None, "produced_at": 0} | forecast, 0, out)
    (optimize,) = out.optimize_requests
    return state, optimize


POINT = [10.0, 60.0, 120.0, 30.0]
P10 = [0.0, 45.0, 70.0, 20.0]
P90 = [25.0, 80.0, 170.0, 45.0]


def test_with_the_setting_the_plan_sells_at_p10_and_buys_at_p90():
    state, optimize = _optimize_request_after({"prices_usd_per_mwh": POINT, "p10_usd_per_mwh": P10,
                                               "p90_usd_per_mwh": P90}, risk=True)
    assert optimize["prices_usd_per_mwh"] == P10 and optimize["charge_prices_usd_per_mwh"] == P90
    fact = state.workflows[S + 2 * STEP].facts["forecast"]
    assert (fact["prices_usd_per_mwh"], fact["p10_usd_per_mwh"], fact["p90_usd_per_mwh"]) == (POINT, P10, P90)


@pytest.mark.parametrize("forecast, risk", [
    ({"prices_usd_per_mwh": POINT}, True),  # persistence and XGBoost carry no quantiles
    ({"prices_usd_per_mwh": POINT, "p10_usd_per_mwh": [], "p90_usd_per_mwh": []}, True),
    ({"prices_usd_per_mwh": POINT, "p10_usd_per_mwh": P10[:2], "p90_usd_per_mwh": P90[:2]}, True),  # short: unusable
    ({"prices_usd_per_mwh": POINT, "p10_usd_per_mwh": P10, "p90_usd_per_mwh": [float("nan")] * 4}, True),
    ({"prices_usd_per_mwh": POINT, "p10_usd_per_mwh": P10, "p90_usd_per_mwh": P90}, False),  # the setting is off
])
def test_otherwise_the_plan_is_on_the_point_forecast(forecast, risk):
    state, optimize = _optimize_request_after(forecast, risk=risk)
    assert optimize["prices_usd_per_mwh"] == POINT and optimize["charge_prices_usd_per_mwh"] == []
    assert "p10_usd_per_mwh" not in state.workflows[S + 2 * STEP].facts["forecast"]


def test_the_setting_reaches_the_autobidder_and_is_off_by_default():
    assert params_from(Settings()).risk_quantiles is False
    assert params_from(Settings(autobidder_risk_quantiles=True)).risk_quantiles is True
    assert Settings.load(environ={"VPP_AUTOBIDDER_RISK_QUANTILES": "true"}).autobidder_risk_quantiles is True


def _plan(prices: list[float], charge_prices: list[float]) -> dict:
    return answer_optimize("cbc", None, lambda: 0.0, {
        "request_id": "r", "node_path": NODE, "interval_start": S, "interval_ms": STEP, "prices_usd_per_mwh": prices,
        "charge_prices_usd_per_mwh": charge_prices, "capacity_wh": 100_000.0, "max_charge_w": 50_000.0,
        "max_discharge_w": 50_000.0, "soc_pct": 10.0, "reserve_pct": 10.0, "efficiency": 0.9,
        "degradation_usd_per_mwh": 0.0, "requested_at": 0})


def test_the_optimize_worker_charges_at_what_charging_costs_when_the_request_says():
    plain = _plan([10.0, 100.0], [])
    assert plain["status"] == "optimal" and plain["charge_w"][0] > 0 and plain["discharge_w"][1] > 0
    risky = _plan([10.0, 100.0], [95.0, 150.0])  # buying dearer than the sale earns after losses: no trade
    assert risky["status"] == "optimal" and risky["charge_w"] == [0.0, 0.0] and risky["discharge_w"] == [0.0, 0.0]
    assert _plan([10.0, 100.0], [95.0])["status"].startswith("error: charge_prices has 1 values for 2 intervals")


def _bid(risk: bool) -> list[dict]:
    state, optimize = _optimize_request_after({"prices_usd_per_mwh": POINT, "p10_usd_per_mwh": P10,
                                               "p90_usd_per_mwh": P90}, risk=risk)
    out = Emitted()
    state.on_optimized(answer_optimize("cbc", None, lambda: 0.0, optimize), 0, out)
    (bid,) = out.submissions
    return bid["pairs"]


def test_a_risk_aware_bid_buys_less_and_pays_less_where_the_forecast_is_uncertain():
    """Now cheap, dear two hours on (120, but only 70 at p10): the plain plan buys its full 50 kW up to what the
    energy is worth at 120 (0.9 x (120 - 20) = 90); the risk-aware one buys what p90 prices still pay for, up to
    0.9 x (70 - 20) = 45, and offers the rest of its room only at p10's floor of 0."""
    assert _bid(risk=False) == [{"price_usd_per_mwh": pytest.approx(90.0), "quantity_w": pytest.approx(-50_000.0)}]
    (extra, planned) = _bid(risk=True)
    assert planned["price_usd_per_mwh"] == pytest.approx(45.0) and -50_000.0 < planned["quantity_w"] < -1_000.0
    assert extra["price_usd_per_mwh"] == pytest.approx(0.0)
    assert extra["quantity_w"] + planned["quantity_w"] == pytest.approx(-50_000.0)
