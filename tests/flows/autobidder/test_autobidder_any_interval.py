"""The autobidder chain on markets of 5-, 15-, 30- and 60-minute intervals (pure: logic, the workers' answers).

One workflow per market, each a row: price records of the market's length -> a forecast request at
that interval (a day ahead counted in its intervals) -> the forecast worker's answer -> an optimize
request -> the optimize worker's plan -> a bid for the interval two ahead -> the award -> a dispatch
command over the whole interval. A price of another length is a dead letter saying both lengths.
"""

from __future__ import annotations

import math
import re

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.autobidder.flow import params_from, to_events
from flows.autobidder.logic import BidderParams, BidderState, Emitted, bid_id_for, command_id_for
from flows.forecast_worker.flow import answer_forecast
from flows.optimize_worker.flow import answer_optimize
from sinks.messages import OutMessage
from vpp.config import Settings
from vpp.serde import Serde

NODE = "us/ca"
S = 1_767_225_600_000  # 2026-01-01T00:00Z: on every grid
MINUTE = 60_000
SERDE = Serde.local()


def price(start: int, interval_ms: int, value: float) -> dict:
    return {"pricing_node": "SP15", "interval_start": start, "interval_end": start + interval_ms,
            "price_usd_per_mwh": value}


def aggregate(soc: float = 50.0) -> dict:
    cap = 100_000.0
    return {"node_path": NODE, "window_start": S - 60_000, "window_end": S - 50_000, "capacity_wh": cap, "soc_pct": soc,
            "energy_available_wh": (soc - 10.0) / 100 * cap, "headroom_wh": (100 - soc) / 100 * cap,
            "discharge_available_w": 50_000.0, "charge_available_w": 40_000.0}


def day_of_prices(interval_ms: int) -> list[dict]:
    """The day up to S: cheap, dear in the afternoon, and dearest two intervals after S a day earlier (so a
    plan from S + 2 intervals on persistence's forecast discharges at once)."""
    per_day = 86_400_000 // interval_ms
    starts = [S - k * interval_ms for k in range(per_day - 1, -1, -1)]
    return [price(t, interval_ms, 150.0 if t == S + 2 * interval_ms - 86_400_000 else
                  80.0 if 12 <= t % 86_400_000 // 3_600_000 < 16 else 20.0) for t in starts]


@pytest.mark.parametrize(("interval_min", "horizon", "history", "keep"), [
    (5, 288, 8 * 288, 288),
    (15, 96, 8 * 96, 96),
    (30, 48, 8 * 48, 48),
    (60, 24, 8 * 24, 24),
])
def test_a_day_ahead_and_eight_days_of_history_are_counted_in_the_market_s_intervals(interval_min, horizon, history,
                                                                                        keep) -> None:
    settings = Settings(market_interval_s=interval_min * 60)
    params = params_from(settings)
    assert (params.interval_ms, params.horizon, params.history_intervals, params.keep_intervals) == (
        interval_min * MINUTE, horizon, history, keep)
    assert params_from(settings.replace(autobidder_horizon_s=6 * 3600)).horizon == 6 * 60 // interval_min


@pytest.mark.parametrize("interval_min", [5, 15, 30, 60])
def test_a_whole_workflow_at_the_market_s_interval(interval_min: int) -> None:
    step = interval_min * MINUTE
    params = BidderParams.for_market(step)
    target = S + 2 * step
    state = BidderState(NODE, params)
    state.on_aggregate(aggregate())
    out = Emitted()
    state.on_prices(day_of_prices(step), 0, out)
    (request,) = out.forecast_requests
    assert (request["interval_start"], request["interval_ms"], request["horizon"]) == (target, step, params.horizon)
    assert request["history_start"] == S - (params.history_intervals - 1) * step
    assert len(request["history_usd_per_mwh"]) == params.history_intervals
    assert sum(v is not None for v in request["history_usd_per_mwh"]) == 86_400_000 // step  # the day given

    forecast = answer_forecast(None, lambda: 1.0, request)
    assert forecast["method"] == "persistence" and len(forecast["prices_usd_per_mwh"]) == params.horizon
    assert forecast["prices_usd_per_mwh"][0] == request["history_usd_per_mwh"][1 - 86_400_000 // step]  # a day before
    out = Emitted()
    state.on_forecast(forecast, 0, out)
    (optimize,) = out.optimize_requests
    assert optimize["interval_ms"] == step and len(optimize["prices_usd_per_mwh"]) == params.horizon

    schedule = answer_optimize("cbc", None, lambda: 1.0, optimize)
    assert schedule["status"] == "optimal"
    out = Emitted()
    state.on_optimized(schedule, 0, out)
    (bid,) = out.submissions
    assert bid["interval_start"] == target and bid["bid_id"] == bid_id_for(NODE, target) and bid["pairs"]

    state.on_bid_response(target, "accepted", {}, 0, Emitted())
    awarded = bid["pairs"][0]["quantity_w"]
    out = Emitted()
    state.on_award({"bid_id": bid["bid_id"], "node_path": NODE, "interval_start": target, "interval_end": target + step,
                    "clearing_price_usd_per_mwh": 1_000.0, "awarded_w": awarded}, 0, out)
    (command,) = out.commands
    assert command["command_id"] == command_id_for(bid["bid_id"])
    assert (command["start"], command["end"], command["target_w"]) == (target, target + step, awarded)


@given(interval_min=st.sampled_from([5, 15, 30, 60]), soc=st.floats(12.0, 98.0),
       prices=st.lists(st.floats(-50.0, 300.0), min_size=2, max_size=8))
@settings(max_examples=25)
def test_a_bid_never_offers_more_energy_than_the_node_holds_over_one_interval(interval_min, soc, prices) -> None:
    """Sold power x the interval's hours never draws the node below its reserve; bought never overfills it."""
    step = interval_min * MINUTE
    params = BidderParams.for_market(step, horizon_ms=len(prices) * step)
    state = BidderState(NODE, params)
    state.on_aggregate(aggregate(soc))
    out = Emitted()
    state.on_prices([price(S, step, 50.0)], 0, out)
    (request,) = out.forecast_requests
    out = Emitted()
    state.on_forecast({"request_id": request["request_id"], "node_path": NODE, "interval_start": S + 2 * step,
                       "method": "persistence", "prices_usd_per_mwh": prices, "detail": None, "produced_at": 0}, 0, out)
    (optimize,) = out.optimize_requests
    out = Emitted()
    state.on_optimized(answer_optimize("cbc", None, lambda: 0.0, optimize), 0, out)
    battery = state.workflows[S + 2 * step].battery
    hours = step / 3_600_000
    for bid in out.submissions:
        sold_w = sum(p["quantity_w"] for p in bid["pairs"] if p["quantity_w"] > 0)
        bought_w = -sum(p["quantity_w"] for p in bid["pairs"] if p["quantity_w"] < 0)
        stored_wh = battery.soc_pct / 100 * battery.capacity_wh
        reserve_wh = battery.reserve_pct / 100 * battery.capacity_wh
        root = math.sqrt(battery.efficiency)
        assert sold_w * hours / root <= stored_wh - reserve_wh + 1e-6 * battery.capacity_wh
        assert bought_w * hours * root <= battery.capacity_wh - stored_wh + 1e-6 * battery.capacity_wh


def message(topic: str, record: dict, offset: int) -> KafkaSourceMessage:
    return KafkaSourceMessage(b"SP15", SERDE.encode(topic, record), topic=topic, offset=offset, partition=0)


@pytest.mark.parametrize(("configured_min", "record_ms", "why"), [
    (5, 5 * MINUTE, None),
    (60, 60 * MINUTE, None),
    (5, 15 * MINUTE, "a price for an interval of 15 minutes .* bids on intervals of 5 minutes \\(setting market_interval_s = 300\\)"),
    (60, 5 * MINUTE, "a price for an interval of 5 minutes .* bids on intervals of 1 hour \\(setting market_interval_s = 3600\\)"),
    (15, 0, "interval_end .* is not after its interval_start"),
])
def test_a_price_of_another_interval_length_is_a_dead_letter_saying_both(configured_min, record_ms, why) -> None:
    record = {**price(S, configured_min * MINUTE, 42.0), "interval_end": S + record_ms}
    out = to_events(SERDE, "telemetry.dlq", (NODE,), [message("market.prices", record, 7)], configured_min * MINUTE)
    if why is None:
        assert out == [(NODE, (NODE, [("prices", [record])]))]
        return
    (dead,) = out
    assert isinstance(dead, OutMessage) and dead.topic == "telemetry.dlq"
    letter = SERDE.decode(dead.value, "telemetry.dlq")
    assert letter["reason"] == "contract_violation" and letter["source_offset"] == 7
    assert re.search(why, letter["detail"]), letter["detail"]


def test_a_state_resumed_under_another_market_interval_forgets_old_prices_but_keeps_its_workflows() -> None:
    state = BidderState(NODE, BidderParams.for_market(5 * MINUTE))
    state.on_aggregate(aggregate())
    state.on_prices(day_of_prices(5 * MINUTE)[-3:], 0, Emitted())
    assert state.prices and state.workflows
    resumed = BidderState.loads(state.dumps())
    resumed.retune(BidderParams.for_market(5 * MINUTE, horizon_ms=3_600_000))
    assert resumed.prices == state.prices and resumed.params.horizon == 12  # same grid: prices kept
    resumed.retune(BidderParams.for_market(60 * MINUTE))
    assert resumed.prices == {} and resumed.last_plan is None and resumed.workflows.keys() == state.workflows.keys()
    out = Emitted()
    resumed.on_prices([price(S + 3_600_000, 3_600_000, 50.0)], 0, out)
    (request,) = out.forecast_requests
    assert request["interval_ms"] == 3_600_000 and request["interval_start"] == S + 3 * 3_600_000


@pytest.mark.parametrize("interval_min", [None, 5, 15, 60])  # None: a request written before requests said it
def test_the_optimize_worker_moves_energy_over_the_request_s_interval(interval_min) -> None:
    request = {"request_id": "n|1|optimize", "node_path": "n", "interval_start": S, "prices_usd_per_mwh": [10.0, 200.0],
               "capacity_wh": 100_000.0, "max_charge_w": 5_000.0, "max_discharge_w": 5_000.0, "soc_pct": 10.0,
               "reserve_pct": 10.0, "efficiency": 0.81, "degradation_usd_per_mwh": 5.0, "requested_at": 0}
    if interval_min is not None:
        request["interval_ms"] = interval_min * MINUTE
    result = answer_optimize("cbc", None, lambda: 0.0, request)
    hours = (interval_min or 5) / 60
    energy = result["energy_wh"] + [result["final_energy_wh"]]
    assert result["status"] == "optimal" and result["charge_w"][0] == 5_000.0  # at the reserve: charge, then sell
    assert result["discharge_w"][1] == pytest.approx(0.81 * 5_000.0)
    for t, (c, d) in enumerate(zip(result["charge_w"], result["discharge_w"])):
        assert energy[t + 1] - energy[t] == pytest.approx(0.9 * c * hours - d * hours / 0.9)
