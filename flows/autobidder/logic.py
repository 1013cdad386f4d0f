"""The autobidder's workflow of one VPP node, pure: one workflow per market interval, made of immutable facts.

``flows.autobidder.flow`` wraps ``BidderState`` in a bytewax stateful step keyed by node path; the
state is snapshotted with the input offsets, so a restarted worker resumes each interval's
workflow where it stopped. Nothing here does I/O or reads a clock: the caller hands in records,
market answers and the wall time (``now_ms``); what to send comes back in an ``Emitted``.

Any market interval (``BidderParams.interval_ms``: 5 minutes by default, 15 minutes, an hour...);
``BidderParams.for_market`` counts the horizon, the history and the memory, given in time, in
intervals of it (a day ahead: 288 5-minute, 96 15-minute or 24 hourly intervals). A price record
of another length is refused before it gets here (``price_interval_problem``: a dead letter).

A workflow is for the interval ``T`` that starts ``lead_intervals`` after the interval of the
newest price (the first one whose gate is still open); prices read after ``T`` has ended (a
backfill, a consumer catching up) start none. Its steps, each recorded once as a fact:

``fetched``       the price history up to the newest price and the node's latest aggregate;
                  a forecast request goes out (status ``forecasting``). A node with no usable
                  aggregate yet (its first window has not closed: the autobidder or the fleet just
                  started) waits for one, up to ``state_wait_ms`` (status ``fetching``), and
                  is fetched when it comes; after that, no bid.
``forecast``      the forecast result for the request id; an optimize request goes out
                  (status ``optimizing``).
``optimized``     the schedule for the request id; the bid is built from its first interval
                  with ``models.bids.build_bid`` (status ``bidding``: to be POSTed).
``bid_submitted`` the market accepted the bid (201, 200 for a resend; 409 means it already holds
                  a bid with this id, whose content is taken as the bid). The bid id is
                  ``bid_id_for(node, T)``: a bid sent again after a restart is the same bid.
``awarded``       the award of the bid from ``market.awards``.
``dispatched``    the ``dispatch.commands`` record for the awarded power over ``T``
                  (command id derived from the bid id; none for an award of 0 W).
``no_bid``        the workflow ended without a bid (the reason says why).

A result that does not arrive within ``step_timeout_ms`` of its request falls back to a bid from
the last schedule when one covers ``T`` (sliced at ``T``), else to no bid; the status's reason
says so. Results for another request id, for a step already passed, or repeated, are ignored;
so are repeated awards. An award whose bid id is ``bid_id_for(node, interval_start)`` is never
dropped, even when its workflow is unknown (e.g. forgotten): the node is still dispatched.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flows.autobidder.params import (
    DAY_MS,
    HISTORY_MS,
    INTERVAL_MS,
    BidderParams,
    _dt,
    battery_from_aggregate,
    bid_id_for,
    command_id_for,
    price_interval_problem,
    request_id_for,
)
from models.bids import build_bid
from models.optimize import Battery, PricePoint, Schedule, ScheduledInterval
from vpp.asset_lifecycle import MARKET_PROGRAM
from vpp.commands import command_record

__all__ = [
    "DAY_MS",
    "HISTORY_MS",
    "INTERVAL_MS",
    "BidderParams",
    "BidderState",
    "Emitted",
    "Workflow",
    "battery_from_aggregate",
    "bid_id_for",
    "command_id_for",
    "price_interval_problem",
    "request_id_for",
]

#: Statuses a workflow passes through; the last three end it.
STATUSES = ("fetching", "forecasting", "optimizing", "bidding", "submitted", "awarded", "dispatched", "no_bid")


@dataclass
class Workflow:
    """One interval's workflow: its facts (step -> record, never replaced) and where it stands."""

    node_path: str
    interval_start_ms: int
    bid_id: str
    status: str
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    deadline_ms: int | None = None
    reason: str | None = None
    bid: dict[str, Any] | None = None  # the market payload, while bidding
    battery: Battery | None = None
    newest_price_ms: int | None = None  # the newest price when the workflow started (its history ends there)


@dataclass
class Emitted:
    """What one call produced: requests, commands, facts and status rows to store, bids to POST."""

    forecast_requests: list[dict[str, Any]] = field(default_factory=list)
    optimize_requests: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)
    workflows: list[dict[str, Any]] = field(default_factory=list)
    submissions: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.forecast_requests or self.optimize_requests or self.commands or self.facts
                    or self.workflows or self.submissions)


class BidderState:
    """Everything the autobidder knows about one node; picklable (``dumps``/``loads``)."""

    def __init__(self, node_path: str, params: BidderParams = BidderParams()):
        self.node_path = node_path
        self.params = params
        self.prices: dict[int, float] = {}
        self.pricing_node: str | None = None
        self.aggregate: dict[str, Any] | None = None
        self.workflows: dict[int, Workflow] = {}
        self.last_plan: dict[str, Any] | None = None

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    def retune(self, params: BidderParams) -> None:
        """Take ``params`` (the settings now, after a restart). Another market interval forgets the prices and
        the last plan (they lie on another grid), never a workflow: its award must still be dispatched."""
        if params.interval_ms != self.params.interval_ms:
            self.prices, self.last_plan = {}, None
        self.params = params

    @staticmethod
    def loads(data: bytes) -> "BidderState":
        return pickle.loads(data)

    # -- facts and statuses ----------------------------------------------------------------
    def _fact(self, wf: Workflow, step: str, record: dict[str, Any], now_ms: int, out: Emitted) -> bool:
        if step in wf.facts:
            return False  # facts are immutable: the first one stands
        wf.facts[step] = record
        out.facts.append({"node_path": wf.node_path, "interval_start": wf.interval_start_ms, "step": step,
                          "fact": record, "at": now_ms})
        return True

    def _status(self, wf: Workflow, status: str, reason: str | None, now_ms: int, out: Emitted) -> None:
        wf.status, wf.reason = status, reason
        out.workflows.append({"node_path": wf.node_path, "interval_start": wf.interval_start_ms, "status": status,
                              "bid_id": wf.bid_id, "reason": reason, "at": now_ms})

    # -- input ---------------------------------------------------------------------------
    def on_aggregate(self, record: dict[str, Any]) -> None:
        if self.aggregate is None or record["window_start"] >= self.aggregate["window_start"]:
            self.aggregate = dict(record)

    def on_prices(self, records: list[dict[str, Any]], now_ms: int, out: Emitted) -> None:
        """Take prices; the newest of them (if newer than every workflow) starts the next interval's workflow."""
        if not records:
            return
        for r in records:
            self.prices[int(r["interval_start"])] = float(r["price_usd_per_mwh"])
            self.pricing_node = r["pricing_node"]
        step = self.params.interval_ms
        newest = max(int(r["interval_start"]) for r in records)
        keep_from = max(self.prices) - self.params.history_intervals * step
        self.prices = {k: v for k, v in self.prices.items() if k > keep_from}
        target = newest + self.params.lead_intervals * step
        if self.workflows and target <= max(self.workflows):
            return  # an old or repeated price: its interval's workflow exists or has passed
        if target + step <= now_ms:
            return  # a backlog (a history backfill, a consumer catching up): that interval is over, nothing to bid
        self._start(target, newest, now_ms, out)
        self._forget(target)

    def _start(self, target: int, newest: int, now_ms: int, out: Emitted) -> None:
        wf = Workflow(self.node_path, target, bid_id_for(self.node_path, target), "fetching", newest_price_ms=newest)
        self.workflows[target] = wf
        battery = battery_from_aggregate(self.aggregate, self.params) if self.aggregate else None
        if battery is None:  # wait for the node's state: its first window may be seconds away
            wf.deadline_ms = now_ms + self.params.state_wait_ms
            self._status(wf, "fetching", "waiting for the node's first aggregate with capacity and state of charge",
                         now_ms, out)
            return
        self._fetch(wf, battery, now_ms, out)

    def _fetch(self, wf: Workflow, battery: Battery, now_ms: int, out: Emitted) -> None:
        """Record what the workflow starts from and request the forecast."""
        history_start, history = self._history(wf)
        self._fetched(wf, now_ms, out)
        wf.battery = battery
        wf.deadline_ms = now_ms + self.params.step_timeout_ms
        out.forecast_requests.append({
            "request_id": request_id_for(self.node_path, wf.interval_start_ms, "forecast"), "node_path": self.node_path,
            "pricing_node": self.pricing_node or "", "interval_start": wf.interval_start_ms,
            "horizon": self.params.horizon, "history_start": history_start, "history_usd_per_mwh": history,
            "interval_ms": self.params.interval_ms, "regressors": [], "requested_at": now_ms})
        self._status(wf, "forecasting", None, now_ms, out)

    def _history(self, wf: Workflow) -> tuple[int, list[float | None]]:
        n, step = self.params.history_intervals, self.params.interval_ms
        history_start = wf.newest_price_ms - (n - 1) * step
        return history_start, [self.prices.get(history_start + k * step) for k in range(n)]

    def _fetched(self, wf: Workflow, now_ms: int, out: Emitted) -> None:
        _, history = self._history(wf)
        self._fact(wf, "fetched", {"pricing_node": self.pricing_node, "newest_price_interval_start": wf.newest_price_ms,
                                   "newest_price_usd_per_mwh": self.prices.get(wf.newest_price_ms),
                                   "history_known": sum(v is not None for v in history),
                                   "aggregate": self.aggregate}, now_ms, out)

    def _forget(self, newest_target: int) -> None:
        horizon = newest_target - self.params.keep_intervals * self.params.interval_ms
        for start in [s for s in self.workflows if s < horizon]:
            del self.workflows[start]

    def on_forecast(self, record: dict[str, Any], now_ms: int, out: Emitted) -> None:
        wf = self.workflows.get(int(record["interval_start"]))
        if wf is None or wf.status != "forecasting" or record["request_id"] != request_id_for(
                self.node_path, wf.interval_start_ms, "forecast"):
            return  # late, repeated or foreign: the workflow has moved on
        prices = [float(p) for p in record["prices_usd_per_mwh"]][: self.params.horizon]
        if not prices or not all(math.isfinite(p) for p in prices):
            self._fall_back(wf, "the forecast result holds no usable price", now_ms, out)
            return
        fact = {"method": record["method"], "detail": record.get("detail"), "prices_usd_per_mwh": prices}
        sell, buy = prices, []
        if self.params.risk_quantiles:  # sell at p10, buy at p90: less where the forecast is uncertain
            p10, p90 = (_finite(record.get(k), len(prices)) for k in ("p10_usd_per_mwh", "p90_usd_per_mwh"))
            if p10 and p90:
                sell, buy = p10, p90
                fact |= {"p10_usd_per_mwh": p10, "p90_usd_per_mwh": p90}
        self._fact(wf, "forecast", fact, now_ms, out)
        wf.deadline_ms = now_ms + self.params.step_timeout_ms
        b = wf.battery
        out.optimize_requests.append({
            "request_id": request_id_for(self.node_path, wf.interval_start_ms, "optimize"), "node_path": self.node_path,
            "interval_start": wf.interval_start_ms, "prices_usd_per_mwh": sell, "charge_prices_usd_per_mwh": buy,
            "capacity_wh": b.capacity_wh,
            "max_charge_w": b.max_charge_w, "max_discharge_w": b.max_discharge_w, "soc_pct": b.soc_pct,
            "reserve_pct": b.reserve_pct, "efficiency": b.efficiency,
            "degradation_usd_per_mwh": b.degradation_usd_per_mwh, "interval_ms": self.params.interval_ms,
            "requested_at": now_ms})
        self._status(wf, "optimizing", None, now_ms, out)

    def on_optimized(self, record: dict[str, Any], now_ms: int, out: Emitted) -> None:
        wf = self.workflows.get(int(record["interval_start"]))
        if wf is None or wf.status != "optimizing" or record["request_id"] != request_id_for(
                self.node_path, wf.interval_start_ms, "optimize"):
            return
        charge, discharge, energy = record["charge_w"], record["discharge_w"], record["energy_wh"]
        self._fact(wf, "optimized", {"status": record["status"], "revenue_usd": record.get("revenue_usd"),
                                     "intervals": len(charge), "first_charge_w": charge[0] if charge else None,
                                     "first_discharge_w": discharge[0] if discharge else None}, now_ms, out)
        if not charge or record.get("final_energy_wh") is None:
            self._fall_back(wf, f"the optimizer found no plan (status {record['status']})", now_ms, out)
            return
        forecast = wf.facts["forecast"]  # the prices the plan sold at: p10 when risk-aware
        prices = forecast.get("p10_usd_per_mwh", forecast["prices_usd_per_mwh"])[: len(charge)]
        self.last_plan = {"interval_start": wf.interval_start_ms, "prices": prices, "charge_w": list(charge),
                          "discharge_w": list(discharge), "energy_wh": list(energy),
                          "final_energy_wh": float(record["final_energy_wh"]), "battery": wf.battery}
        self._bid_from_plan(wf, self.last_plan, None, now_ms, out)

    # -- bids ---------------------------------------------------------------------------
    def _bid_from_plan(self, wf: Workflow, plan: dict[str, Any], fallback: str | None, now_ms: int, out: Emitted) -> None:
        step = self.params.interval_ms
        k = (wf.interval_start_ms - plan["interval_start"]) // step
        start = plan["interval_start"]
        intervals = tuple(ScheduledInterval(_dt(start + i * step), plan["charge_w"][i], plan["discharge_w"][i],
                                            plan["energy_wh"][i]) for i in range(k, len(plan["charge_w"])))
        prices = [PricePoint(_dt(start + i * step), plan["prices"][i]) for i in range(k, len(plan["charge_w"]))]
        bid = build_bid(Schedule("optimal", None, intervals, plan["final_energy_wh"]), prices, plan["battery"],
                        interval=timedelta(milliseconds=step))
        pairs = [{"price_usd_per_mwh": p.price_usd_per_mwh, "quantity_w": p.quantity_w} for p in bid.pairs]
        if not pairs:
            reason = "the plan neither charges nor discharges and leaves no room: no bid"
            self._end_without_bid(wf, f"{fallback}; {reason}" if fallback else reason, now_ms, out)
            return
        wf.bid = {"bid_id": wf.bid_id, "node_path": self.node_path, "pricing_node": self.pricing_node or "",
                  "interval_start": wf.interval_start_ms, "pairs": pairs}
        wf.deadline_ms = now_ms + self.params.retry_ms  # resent then unless the market answers first
        self._status(wf, "bidding", fallback, now_ms, out)
        out.submissions.append(dict(wf.bid))

    def _fall_back(self, wf: Workflow, why: str, now_ms: int, out: Emitted) -> None:
        plan = self.last_plan
        covers = plan is not None and plan["interval_start"] < wf.interval_start_ms < (
            plan["interval_start"] + len(plan["charge_w"]) * self.params.interval_ms)
        if covers:
            self._bid_from_plan(wf, plan, f"fallback: {why}; bid from the schedule planned for interval "
                                          f"{_dt(plan['interval_start']).isoformat()}", now_ms, out)
        else:
            self._end_without_bid(wf, f"fallback: {why}; no earlier schedule covers this interval: no bid", now_ms, out)

    def _end_without_bid(self, wf: Workflow, reason: str, now_ms: int, out: Emitted) -> None:
        wf.deadline_ms, wf.bid = None, None
        self._fact(wf, "no_bid", {"reason": reason}, now_ms, out)
        self._status(wf, "no_bid", reason, now_ms, out)

    def on_bid_response(self, interval_start_ms: int, outcome: str, body: dict[str, Any], now_ms: int,
                        out: Emitted) -> None:
        """The market's answer to a POST: ``accepted`` (201/200), ``conflict`` (409), ``rejected`` (4xx), ``retry``."""
        wf = self.workflows.get(interval_start_ms)
        if wf is None or wf.status != "bidding":
            return
        if outcome in ("accepted", "conflict"):
            held = body.get("bid") if outcome == "conflict" else None
            pairs = (held or {}).get("pairs") or wf.bid["pairs"]
            self._fact(wf, "bid_submitted", {"bid_id": wf.bid_id, "pairs": pairs, "market": outcome,
                                             "fallback": wf.reason}, now_ms, out)
            wf.bid, wf.deadline_ms = None, None
            self._status(wf, "submitted", wf.reason if outcome == "accepted" else
                         "the market already held a bid with this id (sent before a restart): kept it", now_ms, out)
        elif outcome == "rejected":
            self._end_without_bid(wf, f"the market rejected the bid: {body.get('error', body)}", now_ms, out)
        else:
            wf.deadline_ms = now_ms + self.params.retry_ms  # market unreachable: try again

    def on_award(self, record: dict[str, Any], now_ms: int, out: Emitted) -> None:
        start = int(record["interval_start"])
        if record["bid_id"] != bid_id_for(self.node_path, start):
            return  # not a bid of this autobidder
        wf = self.workflows.get(start)
        if wf is None:  # an award must not be lost, even for a forgotten workflow
            wf = self.workflows[start] = Workflow(self.node_path, start, record["bid_id"], "submitted")
        if "awarded" in wf.facts:
            return
        if wf.status == "bidding" and wf.bid is not None:  # the market had it: the award says so
            self._fact(wf, "bid_submitted", {"bid_id": wf.bid_id, "pairs": wf.bid["pairs"], "market": "awarded",
                                             "fallback": wf.reason}, now_ms, out)
        wf.deadline_ms, wf.bid = None, None
        self._fact(wf, "awarded", dict(record), now_ms, out)
        awarded = float(record["awarded_w"])
        if awarded == 0.0:
            self._status(wf, "awarded", "awarded 0 W: nothing to dispatch", now_ms, out)
            return
        command = command_record(self.node_path, awarded, (int(record["interval_end"]) - start) / 60_000,
                                 start_ms=start, issued_by="autobidder", command_id=command_id_for(wf.bid_id),
                                 program=MARKET_PROGRAM)
        out.commands.append(command)
        self._fact(wf, "dispatched", command, now_ms, out)
        self._status(wf, "dispatched", None, now_ms, out)

    # -- time ----------------------------------------------------------------------------
    def next_deadline_ms(self) -> int | None:
        times = [wf.deadline_ms for wf in self.workflows.values() if wf.deadline_ms is not None]
        return min(times) if times else None

    def advance(self, now_ms: int, out: Emitted) -> None:
        """Do what is due at ``now_ms``: fetch workflows whose node state has come, fall back on missing
        results, resend bids the market did not answer."""
        waiting = [wf for wf in self.workflows.values() if wf.status == "fetching"]
        battery = battery_from_aggregate(self.aggregate, self.params) if waiting and self.aggregate else None
        for wf in sorted(self.workflows.values(), key=lambda w: w.interval_start_ms):
            if wf.status == "fetching" and battery is not None:
                self._fetch(wf, battery, now_ms, out)
                continue
            if wf.deadline_ms is None or wf.deadline_ms > now_ms:
                continue
            wf.deadline_ms = None
            if wf.status == "fetching":
                self._fetched(wf, now_ms, out)
                self._end_without_bid(wf, "no aggregate with capacity and state of charge for the node within "
                                          f"{self.params.state_wait_ms / 1000:g} s: no bid", now_ms, out)
            elif wf.status == "forecasting":
                self._fall_back(wf, f"no forecast within {self.params.step_timeout_ms / 1000:g} s", now_ms, out)
            elif wf.status == "optimizing":
                self._fall_back(wf, f"no schedule within {self.params.step_timeout_ms / 1000:g} s", now_ms, out)
            elif wf.status == "bidding" and wf.bid is not None:
                out.submissions.append(dict(wf.bid))

    def pending_bids(self) -> list[dict[str, Any]]:
        """Bids decided but not yet answered by the market (resent after a restart)."""
        return [dict(wf.bid) for wf in self.workflows.values() if wf.status == "bidding" and wf.bid is not None]


def _finite(values, count: int) -> list[float]:
    """``count`` finite prices from a result's optional list, or [] (absent, short or not finite)."""
    prices = [float(v) for v in (values or [])[:count]]
    return prices if len(prices) == count and all(math.isfinite(p) for p in prices) else []
