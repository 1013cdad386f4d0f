"""The autobidder flows on in-memory ports against the real market API (in-process, no broker).

A whole interval: price + aggregate -> forecast request -> (worker) -> optimize request ->
(worker) -> bid POSTed to the market -> award -> dispatch command; and a crash after the bid
(TestingSource.ABORT, no final snapshot), then a resume that re-sends the same bid (the market
keeps one) and dispatches the award the market produced meanwhile.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

import flows.autobidder.flow as autobidder
import flows.forecast_worker.flow as forecast_worker
import flows.optimize_worker.flow as optimize_worker
from flows.autobidder.logic import INTERVAL_MS, BidderParams, bid_id_for, command_id_for, request_id_for
from sinks.messages import OutMessage
from sinks.ports import MemoryPorts
from vpp.config import Settings
from devtools.market.api import MarketClock, MarketService
from devtools.market.book import OrderBook
from vpp.serde import Serde

NODE = "us/ca"
S = 1_767_225_600_000
T = S + 2 * INTERVAL_MS
PARAMS = BidderParams(horizon=12, history_intervals=24)
SETTINGS = Settings(autobidder_nodes=f"{NODE},us/tx")


SERDE = Serde.local()


def message(topic: str, record: dict, offset: int) -> KafkaSourceMessage:
    key = record.get("node_path") or record.get("pricing_node")
    return KafkaSourceMessage(key.encode(), SERDE.encode(topic, record), topic=topic, offset=offset, partition=0)


def aggregate() -> dict:
    return {"node_path": NODE, "depth": 2, "window_start": S - 10_000, "window_end": S, "devices_known": 10,
            "devices_reporting": 10, "estimated_devices": 0, "battery_w": 0.0, "solar_w": 0.0, "load_w": 0.0,
            "grid_w": 0.0, "energy_available_wh": 40_000.0, "headroom_wh": 50_000.0, "discharge_available_w": 50_000.0,
            "charge_available_w": 40_000.0, "capacity_wh": 100_000.0, "soc_pct": 50.0, "late": 0}


def prices() -> list[dict]:
    return [{"pricing_node": "SP15", "interval_start": S - k * INTERVAL_MS, "interval_end": S - (k - 1) * INTERVAL_MS,
             "price_usd_per_mwh": 30.0 + 40.0 * (k % 6 > 2)} for k in range(23, -1, -1)]


def worker_answers(requests: list[OutMessage], flow_module, topic: str) -> list[dict]:
    """Run a worker flow over the requests the autobidder wrote; its results."""
    ports = MemoryPorts([KafkaSourceMessage(m.key.encode(), m.value, topic=m.topic, offset=i, partition=0)
                         for i, m in enumerate(requests)])
    run_main(flow_module.build_flow(SETTINGS, ports=ports, now=lambda: 1.0, **(
        {"model": None} if flow_module is forecast_worker else {})))
    return ports.records(topic)


@pytest.fixture
def market():
    service = MarketService(OrderBook("SP15", 300_000), MarketClock(S, speed=1.0), deliver=None,
                            log=lambda line: None).start()
    yield service
    service.stop()


class RecordingMarket:
    """The real market API, with each answer kept (to assert on resends)."""

    def __init__(self, url: str):
        self.api = autobidder.MarketApi(url)
        self.answers: list[tuple[str, dict]] = []

    def __call__(self, payload: dict) -> tuple[str, dict]:
        answer = self.api(payload)
        self.answers.append((payload["bid_id"], answer[0]))
        return answer


def run_autobidder(items: list, market_url: str, *, recovery: Path | None = None):
    ports, store, submit = MemoryPorts(items), [], RecordingMarket(market_url)
    flow = autobidder.build_flow(SETTINGS, ports=ports, submit=submit, store=TestingSink(store), params=PARAMS)
    if recovery is None:
        run_main(flow)
    else:
        run_main(flow, epoch_interval=timedelta(seconds=30), recovery_config=RecoveryConfig(str(recovery)))
    return ports, store, submit


def fetch_and_answer(market_url: str) -> list:
    """The input of a whole workflow for T up to the schedule, answered by the real workers."""
    items = [message("fleet.aggregates", aggregate(), 0)] + [message("market.prices", p, 1 + i) for i, p in enumerate(prices())]
    ports, _, _ = run_autobidder(list(items), market_url)
    forecasts = worker_answers([m for m in ports.written if m.topic == "autobidder.forecast.requests"],
                               forecast_worker, "autobidder.forecast.results")
    items += [message("autobidder.forecast.results", r, 100 + i) for i, r in enumerate(forecasts)]
    ports, _, _ = run_autobidder(list(items), market_url)
    schedules = worker_answers([m for m in ports.written if m.topic == "autobidder.optimize.requests"],
                               optimize_worker, "autobidder.optimize.results")
    return items + [message("autobidder.optimize.results", r, 200 + i) for i, r in enumerate(schedules)]


def test_a_whole_interval_from_price_to_dispatch_command(market: MarketService) -> None:
    items = fetch_and_answer(market.url)
    ports, store, submit = run_autobidder(list(items), market.url)
    bid = market.book.get(bid_id_for(NODE, T))
    assert bid is not None and bid["pairs"], "the bid is in the market"
    assert market.book.stats()["bids"] == 1, "us/tx has no aggregate: no bid"
    (award,) = market.book.awards_for(T, 70.0)
    items.append(message("market.awards", award, 300))
    ports, store, submit = run_autobidder(items, market.url)
    assert [a for _, a in submit.answers] == ["accepted"], "the first run of this input resends the same bid: 200"

    forecast_requests = ports.records("autobidder.forecast.requests")
    assert {r["node_path"] for r in forecast_requests} == {NODE}
    assert forecast_requests[0]["request_id"] == request_id_for(NODE, T, "forecast")
    commands = ports.records("dispatch.commands")
    if award["awarded_w"]:
        assert commands == [{"command_id": command_id_for(bid_id_for(NODE, T)), "node_path": NODE,
                             "target_w": award["awarded_w"], "start": T, "end": T + INTERVAL_MS,
                             "issued_by": "autobidder", "program": "market"}]
    facts = [r["step"] for kind, r in store if kind == "fact" and r["node_path"] == NODE and r["interval_start"] == T]
    assert facts == ["fetched", "forecast", "optimized", "bid_submitted", "awarded"] + (
        ["dispatched"] if award["awarded_w"] else [])
    statuses = [r["status"] for kind, r in store if kind == "workflow" and r["node_path"] == "us/tx"]
    assert statuses == ["fetching"], "us/tx has no aggregate: it waits for one (in event time no deadline passes)"


def test_a_price_before_the_node_s_first_aggregate_is_forecast_once_the_aggregate_comes(market: MarketService) -> None:
    items = [message("market.prices", p, i) for i, p in enumerate(prices())]
    items.append(message("fleet.aggregates", aggregate(), len(items)))
    ports, store, _ = run_autobidder(items, market.url)
    (request,) = ports.records("autobidder.forecast.requests")
    assert request["node_path"] == NODE and request["interval_start"] == T
    statuses = [r["status"] for kind, r in store if kind == "workflow" and r["node_path"] == NODE]
    assert statuses == ["fetching", "forecasting"]


def test_a_crash_after_the_bid_resumes_with_the_same_bid_and_keeps_the_award(market: MarketService, tmp_path: Path) -> None:
    items = fetch_and_answer(market.url)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    items.append(TestingSource.ABORT())
    run_autobidder(items, market.url, recovery=recovery)  # stops at ABORT without a final snapshot, like kill -9
    assert market.book.stats()["bids"] == 1
    first_pairs = market.book.get(bid_id_for(NODE, T))["pairs"]
    # while the autobidder is down the market clears the interval
    (award,) = market.book.awards_for(T, 500.0)
    items.append(message("market.awards", award, 300))
    ports, store, submit = run_autobidder(items, market.url, recovery=recovery)
    assert market.book.stats()["bids"] == 1 and market.book.get(bid_id_for(NODE, T))["pairs"] == first_pairs
    assert submit.answers, "the resumed run decided the bid again and re-sent it"
    assert all(bid_id == bid_id_for(NODE, T) and answer == "accepted" for bid_id, answer in submit.answers)
    commands = ports.records("dispatch.commands")
    assert {c["command_id"] for c in commands} == {command_id_for(bid_id_for(NODE, T))}
    assert commands[-1]["target_w"] == award["awarded_w"] != 0.0
