"""The autobidder's market client: httpx with timeouts, and bids sent so that a slow market never stalls the worker.

``MarketApi`` runs against the real market API (in-process) and against a socket that accepts
connections but never answers; ``PooledBids`` and ``BidderLogic`` against a market that answers
only when the test lets it.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from flows.autobidder.flow import BidderLogic
from flows.autobidder.logic import INTERVAL_MS, BidderParams, BidderState, Workflow, bid_id_for
from sinks.market_client import InlineBids, MarketApi, PooledBids
from devtools.market.api import MarketClock, MarketService
from devtools.market.book import OrderBook

NODE = "us/ca"
S = 1_767_225_600_000
T = S + 3 * INTERVAL_MS


def payload(node: str = NODE, interval_start: int = T, quantity_w: float = 5000.0) -> dict:
    return {"bid_id": bid_id_for(node, interval_start), "node_path": node, "pricing_node": "SP15",
            "interval_start": interval_start, "pairs": [{"price_usd_per_mwh": 30.0, "quantity_w": quantity_w}]}


@pytest.fixture
def market():
    with MarketService(OrderBook("SP15", 300_000), MarketClock(S), log=lambda _: None) as service:
        yield service


@pytest.fixture
def silent_url():
    """A listening socket that never answers (the backlog accepts the connection)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_market_s_answers_become_outcomes(market):
    api = MarketApi(market.url)
    assert api(payload())[0] == "accepted"
    assert api(payload())[0] == "accepted"  # the same bid again: 200
    outcome, body = api(payload(quantity_w=1.0))
    assert outcome == "conflict" and body["bid"]["pairs"][0]["quantity_w"] == 5000.0
    outcome, body = api({**payload(), "bid_id": "other", "interval_start": S})  # its gate has closed
    assert outcome == "rejected" and "gate closed" in body["error"]


def test_a_market_that_does_not_answer_is_a_retry_within_the_timeout(silent_url):
    api = MarketApi(silent_url, timeout=httpx.Timeout(0.3))
    started = time.monotonic()
    outcome, body = api(payload())
    assert outcome == "retry" and "not reachable" in body["error"]
    assert time.monotonic() - started < 2


class HeldMarket:
    """A submit callable that answers only once released; counts its calls."""

    def __init__(self, outcome: str = "accepted"):
        self.release = threading.Event()
        self.calls: list[str] = []
        self.outcome = outcome

    def __call__(self, bid: dict) -> tuple[str, dict]:
        self.calls.append(bid["bid_id"])
        assert self.release.wait(10)
        if self.outcome == "boom":
            raise RuntimeError("client broke")
        return self.outcome, {"bid_id": bid["bid_id"], "status": "accepted"}


def take_answers(bids: PooledBids, node: str, count: int, timeout_s: float = 5.0) -> list:
    """The node's answers, polled as a stateful step would until ``count`` came."""
    answers: list = []
    deadline = time.monotonic() + timeout_s
    while len(answers) < count:
        assert time.monotonic() < deadline, f"{len(answers)} of {count} answers came"
        answers += bids.take(node)
        time.sleep(0.01)
    return answers


def test_pooled_bids_return_at_once_and_hold_the_answer_for_its_node():
    held = HeldMarket()
    bids = PooledBids(held, max_in_flight=2)
    started = time.monotonic()
    assert bids.send(payload()) is True
    assert bids.send(payload()) is False  # already on its way: not sent twice
    assert time.monotonic() - started < 0.5
    assert bids.waiting(NODE) and bids.take(NODE) == [] and not bids.waiting("us/tx")
    held.release.set()
    [(sent, outcome, body)] = take_answers(bids, NODE, 1)
    assert (sent["bid_id"], outcome) == (bid_id_for(NODE, T), "accepted") and held.calls == [sent["bid_id"]]
    assert not bids.waiting(NODE)
    bids.close()


def test_a_full_pool_refuses_more_bids_instead_of_queueing_them():
    held = HeldMarket()
    bids = PooledBids(held, max_in_flight=2)
    assert [bids.send(payload(interval_start=T + k * INTERVAL_MS)) for k in range(3)] == [True, True, False]
    held.release.set()
    assert len(take_answers(bids, NODE, 2)) == 2 and held.calls == [bid_id_for(NODE, T + k * INTERVAL_MS) for k in (0, 1)]
    assert bids.send(payload(interval_start=T + 2 * INTERVAL_MS)) is True  # room again
    bids.close()


def test_a_client_that_raises_is_an_answer_to_retry():
    held = HeldMarket("boom")
    held.release.set()
    bids = PooledBids(held)
    bids.send(payload())
    [(_, outcome, body)] = take_answers(bids, NODE, 1)
    assert outcome == "retry" and "client broke" in body["error"]
    bids.close()


def bidding_state(now_ms: int) -> BidderState:
    """A node whose bid for T is decided and due to be sent."""
    state = BidderState(NODE, BidderParams(retry_ms=2_000))
    state.workflows[T] = Workflow(NODE, T, bid_id_for(NODE, T), "bidding", bid=payload(), deadline_ms=now_ms - 1)
    return state


def test_a_slow_market_does_not_stall_the_step_and_its_answer_arrives_later_as_an_event():
    held, clock = HeldMarket(), [1_000.0]
    logic = BidderLogic(bidding_state(1_000_000).dumps(), params=BidderParams(), bids=PooledBids(held),
                        wall_clock=lambda: clock[0])

    started = time.monotonic()
    emitted, _ = logic.on_notify()  # the resend deadline passed: the bid goes out
    assert time.monotonic() - started < 0.5, "the step waited for the market"
    assert held.calls == [bid_id_for(NODE, T)] and not any(f["step"] == "bid_submitted" for e in emitted for f in e.facts)
    assert logic.notify_at().timestamp() == pytest.approx(clock[0] + 0.05)  # wakes soon to take the answer

    held.release.set()
    steps: list[str] = []
    deadline = time.monotonic() + 5
    while not steps:  # bytewax calls on_notify at notify_at
        assert time.monotonic() < deadline, "the answer never reached the state"
        time.sleep(0.01)
        steps = [f["step"] for e in logic.on_notify()[0] for f in e.facts]
    assert steps == ["bid_submitted"] and held.calls == [bid_id_for(NODE, T)]  # not resent meanwhile
    assert logic.state.workflows[T].status == "submitted" and logic.notify_at() is None


def test_a_bid_the_busy_pool_refused_is_sent_again_at_its_resend_deadline():
    held, clock = HeldMarket(), [1_000.0]
    bids = PooledBids(held, max_in_flight=1)
    assert bids.send(payload(node="us/tx"))  # another node's bid holds the only sender
    logic = BidderLogic(bidding_state(1_000_000).dumps(), params=BidderParams(), bids=bids, wall_clock=lambda: clock[0])

    logic.on_notify()
    assert logic.notify_at().timestamp() == pytest.approx(clock[0] + 2)  # retry_ms later, not never

    held.release.set()
    take_answers(bids, "us/tx", 1)
    assert held.calls == [bid_id_for("us/tx", T)]  # ours was refused, not queued
    clock[0] += 2
    logic.on_notify()
    take_answers(bids, NODE, 1)
    assert held.calls == [bid_id_for("us/tx", T), bid_id_for(NODE, T)]
    bids.close()


def test_inline_bids_answer_at_once():
    calls = []
    bids = InlineBids(lambda bid: (calls.append(bid["bid_id"]), ("accepted", {}))[1])
    assert bids.send(payload()) and bids.waiting(NODE)
    assert [outcome for _, outcome, _ in bids.take(NODE)] == ["accepted"] and calls == [bid_id_for(NODE, T)]
