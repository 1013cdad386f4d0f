"""The autobidder's workflow state machine (flows.autobidder.logic): each transition a row."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from flows.autobidder.logic import (
    INTERVAL_MS,
    BidderParams,
    BidderState,
    Emitted,
    battery_from_aggregate,
    bid_id_for,
    command_id_for,
    request_id_for,
)
from flows.optimize_worker.flow import answer_optimize

NODE = "us/ca"
S = 1_767_225_600_000  # 2026-01-01T00:00Z, on the 5-minute grid
T = S + 2 * INTERVAL_MS  # the interval bid for when the price of S arrives
PARAMS = BidderParams(horizon=6, history_intervals=12, step_timeout_ms=30_000, retry_ms=2_000, state_wait_ms=20_000)
FORECAST = [40.0, 10.0, 12.0, 90.0, 95.0, 30.0]


def price(start: int, value: float = 50.0) -> dict:
    return {"pricing_node": "SP15", "interval_start": start, "interval_end": start + INTERVAL_MS, "price_usd_per_mwh": value}


def aggregate(window_start: int = S - 60_000, soc: float = 50.0) -> dict:
    cap = 100_000.0
    return {"node_path": NODE, "window_start": window_start, "window_end": window_start + 10_000, "capacity_wh": cap,
            "soc_pct": soc, "energy_available_wh": (soc - 10.0) / 100 * cap, "headroom_wh": (100 - soc) / 100 * cap,
            "discharge_available_w": 50_000.0, "charge_available_w": 40_000.0}


def forecast(start: int = T, prices=FORECAST, request_id: str | None = None) -> dict:
    return {"request_id": request_id or request_id_for(NODE, start, "forecast"), "node_path": NODE,
            "interval_start": start, "method": "persistence", "prices_usd_per_mwh": list(prices), "detail": None,
            "produced_at": 0}


def optimized(state: BidderState, out: Emitted) -> dict:
    """The optimize worker's real answer to the request the state emitted."""
    (request,) = out.optimize_requests
    return answer_optimize("cbc", None, lambda: 0.0, request)


def award(start: int = T, awarded_w: float = 25_000.0, bid_id: str | None = None) -> dict:
    return {"bid_id": bid_id or bid_id_for(NODE, start), "node_path": NODE, "interval_start": start,
            "interval_end": start + INTERVAL_MS, "clearing_price_usd_per_mwh": 60.0, "awarded_w": awarded_w}


def steps(out: Emitted) -> list[str]:
    return [f["step"] for f in out.facts]


def at(stage: str, now: int = 1_000) -> tuple[BidderState, Emitted]:
    """A state driven to ``stage`` of the workflow for T; the Emitted of the last transition."""
    state = BidderState(NODE, PARAMS)
    state.on_aggregate(aggregate())
    out = Emitted()
    state.on_prices([price(S - k * INTERVAL_MS, 40.0 + k) for k in range(11, -1, -1)], now, out)
    if stage == "forecasting":
        return state, out
    out = Emitted()
    state.on_forecast(forecast(), now, out)
    if stage == "optimizing":
        return state, out
    result = optimized(state, out)
    out = Emitted()
    state.on_optimized(result, now, out)
    if stage == "bidding":
        return state, out
    out = Emitted()
    state.on_bid_response(T, "accepted", {}, now, out)
    return state, out


# -- the happy path, step by step -------------------------------------------------------------


def test_a_price_with_a_known_node_fetches_and_requests_a_forecast() -> None:
    state, out = at("forecasting")
    assert steps(out) == ["fetched"]
    (request,) = out.forecast_requests
    assert request["request_id"] == request_id_for(NODE, T, "forecast")
    assert request["interval_start"] == T and request["horizon"] == 6
    assert request["history_start"] == S - 11 * INTERVAL_MS and len(request["history_usd_per_mwh"]) == 12
    assert state.workflows[T].status == "forecasting" and state.next_deadline_ms() == 1_000 + 30_000


def test_the_forecast_result_records_the_fact_and_requests_a_schedule() -> None:
    state, out = at("optimizing")
    assert steps(out) == ["forecast"]
    (request,) = out.optimize_requests
    assert request["prices_usd_per_mwh"] == FORECAST
    assert request["soc_pct"] == 50.0 and request["reserve_pct"] == pytest.approx(10.0)
    assert state.workflows[T].status == "optimizing"


def test_the_schedule_becomes_a_bid_with_the_deterministic_id() -> None:
    state, out = at("bidding")
    assert steps(out) == ["optimized"]
    (bid,) = out.submissions
    assert bid["bid_id"] == bid_id_for(NODE, T) and bid["interval_start"] == T and bid["pricing_node"] == "SP15"
    assert bid["pairs"], "a plan over these prices trades"
    assert state.workflows[T].status == "bidding" and state.last_plan["interval_start"] == T


def test_an_accepted_bid_is_a_fact() -> None:
    state, out = at("submitted")
    assert steps(out) == ["bid_submitted"]
    assert out.facts[0]["fact"]["market"] == "accepted"
    assert state.workflows[T].status == "submitted" and state.next_deadline_ms() is None


def test_an_award_becomes_a_dispatch_command_for_the_interval() -> None:
    state, _ = at("submitted")
    out = Emitted()
    state.on_award(award(), 2_000, out)
    assert steps(out) == ["awarded", "dispatched"]
    (command,) = out.commands
    assert command == {"command_id": command_id_for(bid_id_for(NODE, T)), "node_path": NODE, "target_w": 25_000.0,
                       "start": T, "end": T + INTERVAL_MS, "issued_by": "autobidder", "program": "market"}
    assert state.workflows[T].status == "dispatched"


def test_the_same_node_and_interval_always_get_the_same_bid_id() -> None:
    assert bid_id_for(NODE, T) == bid_id_for(NODE, T)
    assert len({bid_id_for(NODE, T), bid_id_for(NODE, T + INTERVAL_MS), bid_id_for("us/tx", T)}) == 3


# -- what is ignored ----------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "event"), [
    ("forecasting", ("prices", [price(S)])),                                     # the same price again
    ("forecasting", ("prices", [price(S - INTERVAL_MS)])),                       # an older price
    ("forecasting", ("forecast", forecast(request_id="us/ca|0|forecast"))),      # another request's result
    ("forecasting", ("forecast", forecast(start=T + INTERVAL_MS))),              # a workflow that does not exist
    ("optimizing", ("forecast", forecast())),                                    # a repeated forecast
    ("submitted", ("forecast", forecast())),                                     # a forecast long after
    ("submitted", ("award", award(bid_id="bid-someone-else"))),                  # not our bid
    ("dispatched", ("award", award())),                                          # a repeated award
    ("dispatched", ("award", award(awarded_w=-1_000.0))),                        # a different copy: the first stands
])
def test_duplicate_foreign_and_out_of_order_input_changes_nothing(stage: str, event: tuple) -> None:
    state, _ = at("submitted" if stage == "dispatched" else stage)
    if stage == "dispatched":
        state.on_award(award(), 2_000, Emitted())
    before = state.dumps()
    out = Emitted()
    kind, value = event
    {"prices": state.on_prices, "forecast": state.on_forecast, "award": state.on_award}[kind](value, 5_000, out)
    assert not out
    assert BidderState.loads(before).workflows.keys() == state.workflows.keys()
    assert {k: (w.status, w.facts) for k, w in state.workflows.items()} == {
        k: (w.status, w.facts) for k, w in BidderState.loads(before).workflows.items()}


def test_a_repeated_optimize_result_is_ignored() -> None:
    state = BidderState(NODE, PARAMS)
    state.on_aggregate(aggregate())
    state.on_prices([price(S)], 0, Emitted())
    out = Emitted()
    state.on_forecast(forecast(), 0, out)
    result = optimized(state, out)
    state.on_optimized(result, 0, Emitted())
    again = Emitted()
    state.on_optimized(result, 0, again)
    assert not again


# -- fallbacks ---------------------------------------------------------------------------------


def test_a_price_before_the_node_is_known_waits_for_its_first_aggregate_and_then_fetches() -> None:
    state = BidderState(NODE, PARAMS)
    out = Emitted()
    state.on_prices([price(S)], 0, out)
    assert steps(out) == [] and not out.forecast_requests
    assert state.workflows[T].status == "fetching" and state.next_deadline_ms() == 20_000
    out = Emitted()
    state.on_aggregate({**aggregate(), "capacity_wh": 0.0, "soc_pct": None})  # a node of devices not yet registered
    state.advance(10_000, out)
    assert not out and state.workflows[T].status == "fetching"
    state.on_aggregate(aggregate())
    state.advance(15_000, out)
    assert steps(out) == ["fetched"] and out.facts[0]["fact"]["aggregate"]["soc_pct"] == 50.0
    (request,) = out.forecast_requests
    assert request["interval_start"] == T and request["history_start"] == S - 11 * INTERVAL_MS
    assert state.workflows[T].status == "forecasting" and state.next_deadline_ms() == 15_000 + 30_000


def test_prices_of_a_backlog_start_no_workflow_for_an_interval_already_over() -> None:
    state = BidderState(NODE, PARAMS)
    state.on_aggregate(aggregate())
    out = Emitted()
    state.on_prices([price(S)], T + INTERVAL_MS, out)  # read when T has ended: e.g. a day of backfilled prices
    assert not out and not state.workflows and state.prices == {S: 50.0}
    state.on_prices([price(S + INTERVAL_MS)], T + INTERVAL_MS, out)  # the next one: its interval is still ahead
    assert list(state.workflows) == [T + INTERVAL_MS] and len(out.forecast_requests) == 1


def test_a_node_with_no_aggregate_within_the_step_timeout_ends_in_no_bid() -> None:
    state = BidderState(NODE, PARAMS)
    out = Emitted()
    state.on_prices([price(S)], 0, out)
    assert [w["status"] for w in out.workflows] == ["fetching"]
    out = Emitted()
    state.advance(19_999, out)
    assert not out, "not due yet"
    state.advance(20_000, out)
    assert steps(out) == ["fetched", "no_bid"] and not out.forecast_requests
    wf = state.workflows[T]
    assert wf.status == "no_bid" and "no aggregate" in wf.reason and "within 20 s" in wf.reason
    state.on_aggregate(aggregate())  # too late for T: it stays without a bid
    later = Emitted()
    state.advance(21_000, later)
    assert not later and state.workflows[T].status == "no_bid"


@pytest.mark.parametrize("stage", ["forecasting", "optimizing"])
def test_a_missing_result_without_an_earlier_schedule_falls_back_to_no_bid(stage: str) -> None:
    state, _ = at(stage, now=0)
    out = Emitted()
    state.advance(29_999, out)
    assert not out, "not due yet"
    state.advance(30_000, out)
    assert steps(out) == ["no_bid"] and not out.submissions
    wf = state.workflows[T]
    assert wf.status == "no_bid" and wf.reason.startswith("fallback: no ") and "no earlier schedule" in wf.reason


def test_a_missing_result_falls_back_to_a_bid_from_the_last_schedule() -> None:
    state, _ = at("submitted", now=0)
    out = Emitted()
    state.on_prices([price(S + INTERVAL_MS)], 100, out)  # the next interval's workflow starts
    nxt = T + INTERVAL_MS
    state.advance(100 + 30_000, out)  # ... and its forecast never comes
    (bid,) = out.submissions
    assert bid["bid_id"] == bid_id_for(NODE, nxt) and bid["interval_start"] == nxt
    wf = state.workflows[nxt]
    assert wf.status == "bidding" and "fallback: no forecast within 30 s" in wf.reason
    assert "schedule planned for interval" in wf.reason


def test_an_optimizer_without_a_plan_falls_back() -> None:
    state, out = at("optimizing")
    result = {**optimized(state, out), "status": "infeasible", "charge_w": [], "discharge_w": [], "energy_wh": [],
              "final_energy_wh": None}
    out = Emitted()
    state.on_optimized(result, 1_000, out)
    assert steps(out) == ["optimized", "no_bid"]
    assert "optimizer found no plan (status infeasible)" in state.workflows[T].reason


# -- the market's answers ------------------------------------------------------------------------


def test_an_unreachable_market_gets_the_same_bid_again_later() -> None:
    state, first = at("bidding", now=0)
    state.on_bid_response(T, "retry", {"error": "down"}, 10, Emitted())
    out = Emitted()
    state.advance(10 + 2_000, out)
    assert out.submissions == first.submissions
    state.on_bid_response(T, "accepted", {}, 2_100, out)
    assert state.workflows[T].status == "submitted"


def test_a_conflict_keeps_the_bid_the_market_holds() -> None:
    state, _ = at("bidding")
    held = {"bid_id": bid_id_for(NODE, T), "pairs": [{"price_usd_per_mwh": 1.0, "quantity_w": 5.0}]}
    out = Emitted()
    state.on_bid_response(T, "conflict", {"error": "other content", "bid": held}, 2_000, out)
    assert out.facts[0]["fact"]["pairs"] == held["pairs"] and out.facts[0]["fact"]["market"] == "conflict"
    assert state.workflows[T].status == "submitted"


def test_a_rejected_bid_ends_without_a_bid() -> None:
    state, _ = at("bidding")
    out = Emitted()
    state.on_bid_response(T, "rejected", {"error": "gate closed"}, 2_000, out)
    assert steps(out) == ["no_bid"] and "gate closed" in state.workflows[T].reason


# -- awards ----------------------------------------------------------------------------------


def test_an_award_of_zero_is_recorded_and_dispatches_nothing() -> None:
    state, _ = at("submitted")
    out = Emitted()
    state.on_award(award(awarded_w=0.0), 2_000, out)
    assert steps(out) == ["awarded"] and not out.commands
    assert state.workflows[T].status == "awarded"


def test_an_award_for_a_workflow_the_state_no_longer_knows_is_still_dispatched() -> None:
    state = BidderState(NODE, PARAMS)
    out = Emitted()
    state.on_award(award(start=S - 100 * INTERVAL_MS), 0, out)
    assert [c["start"] for c in out.commands] == [S - 100 * INTERVAL_MS]


def test_an_award_arriving_before_the_bid_answer_is_kept() -> None:
    state, _ = at("bidding")  # e.g. after a restart the answer is not in the snapshot yet
    out = Emitted()
    state.on_award(award(), 2_000, out)
    assert out.commands and state.workflows[T].status == "dispatched"
    later = Emitted()
    state.on_bid_response(T, "accepted", {}, 3_000, later)
    assert not later, "the workflow has moved on"


# -- snapshots ----------------------------------------------------------------------------------


def test_a_snapshot_resumes_the_workflow_where_it_stood() -> None:
    state, out = at("optimizing")
    result = optimized(state, out)
    resumed = BidderState.loads(state.dumps())
    a, b = Emitted(), Emitted()
    state.on_optimized(result, 5, a)
    resumed.on_optimized(result, 5, b)
    assert a == b and a.submissions


def test_the_node_battery_comes_from_its_aggregate() -> None:
    battery = battery_from_aggregate(aggregate(soc=60.0), PARAMS)
    assert battery.capacity_wh == 100_000.0 and battery.soc_pct == 60.0
    assert battery.reserve_pct == pytest.approx(10.0) and battery.max_discharge_w == 50_000.0
    assert battery_from_aggregate({**aggregate(), "soc_pct": None}, PARAMS) is None


def test_old_workflows_are_forgotten() -> None:
    state = BidderState(NODE, BidderParams(horizon=6, history_intervals=12, keep_intervals=3))
    state.on_aggregate(aggregate())
    for k in range(6):
        state.on_prices([price(S + k * INTERVAL_MS)], k, Emitted())
    assert sorted(state.workflows) == [T + k * INTERVAL_MS for k in range(2, 6)]


def test_times_are_on_the_grid() -> None:
    assert datetime.fromtimestamp(T / 1000, timezone.utc).minute % 5 == 0
