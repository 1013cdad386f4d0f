"""The market API over real HTTP: idempotent bids, gate closure, the journal across a restart, clearing."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from devtools.market.api import MarketClock, MarketService
from devtools.market.book import JournalError, OrderBook
from devtools.market.clearing import awarded_w
from devtools.market.prices import price_series
from raw_http import send_until_closed
from held_clock import HeldWall

T0 = 1_780_000_200_000  # a 5-minute boundary
STEP = 300_000


def call(url: str, method: str = "GET", body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    response = httpx.request(method, url, content=data, headers={"Content-Type": "application/json"}, timeout=10)
    return response.status_code, response.json()


def bid(interval_start_ms: int, bid_id: str = "bid-1", **overrides) -> dict:
    body = {
        "bid_id": bid_id,
        "node_path": "us/ca/sf",
        "pricing_node": "SP15",
        "interval_start": interval_start_ms,
        "pairs": [{"price_usd_per_mwh": -20.0, "quantity_w": -2000.0}, {"price_usd_per_mwh": 30.0, "quantity_w": 5000.0}],
    }
    body.update(overrides)
    return body


def market(start_ms: int = T0, speed: float = 1.0, journal=None, deliver=None, wall=time.monotonic) -> MarketService:
    book = OrderBook("SP15", gate_closure_ms=STEP, journal=journal)
    return MarketService(book, MarketClock(start_ms, speed, wall), seed=3, deliver=deliver, log=lambda _: None)


def test_same_bid_twice_is_one_bid_and_other_content_under_its_id_is_a_conflict():
    with market() as m:
        first_status, first = call(m.url + "/bids", "POST", bid(T0 + 3 * STEP))
        again_status, again = call(m.url + "/bids", "POST", bid(T0 + 3 * STEP))
        changed_status, changed = call(m.url + "/bids", "POST", bid(T0 + 3 * STEP, pairs=[{"price_usd_per_mwh": 1, "quantity_w": 1}]))
        assert (first_status, again_status, changed_status) == (201, 200, 409)
        assert again == first and first["status"] == "accepted" and first["award"] is None
        assert "already accepted with other content" in changed["error"] and changed["bid"] == first
        assert call(m.url + "/bids/bid-1") == (200, first)
        assert call(m.url + "/status")[1]["bids"] == 1


def test_bids_after_gate_closure_are_rejected_with_the_reason():
    with market() as m:
        # Market time is T0: the interval starting T0 + 5 min closed at T0 exactly.
        status, body = call(m.url + "/bids", "POST", bid(T0 + STEP))
        assert status == 422
        assert "gate closed" in body["error"] and "300 s before" in body["error"]
        assert call(m.url + "/bids/bid-1")[0] == 404
        assert call(m.url + "/bids", "POST", bid(T0 + 2 * STEP))[0] == 201


def test_a_resent_bid_after_its_gate_closed_gets_its_result_not_an_error():
    with market(start_ms=T0 - 2 * STEP + 1000, speed=600) as m:  # 5 market minutes every 0.5 s
        assert call(m.url + "/bids", "POST", bid(T0))[0] == 201
        time.sleep(1.5)
        status, body = call(m.url + "/bids", "POST", bid(T0))
        assert status == 200 and body["bid_id"] == "bid-1"


@pytest.mark.parametrize(
    "raw, status, message",
    [(b"{not json", 400, "not JSON"), (b"[1, 2]", 400, "JSON object"), (json.dumps({"bid_id": "x"}).encode(), 422, "node_path")],
)
def test_malformed_requests_get_a_clear_error(raw, status, message):
    with market() as m:
        got_status, body = call(m.url + "/bids", "POST", raw=raw)
        assert got_status == status and message in body["error"]
        assert call(m.url + "/nothing")[0] == 404
        assert call(m.url + "/bids/x", "DELETE") == (405, {"error": "DELETE is not supported: POST /bids, GET /bids/ID or /status"})


def raw_answer(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as-is; the status and everything the server sent until it closed the connection."""
    received = send_until_closed(url, request)
    return int(received.split(b" ", 2)[1]), received


# uvicorn frames requests now: a Content-Length that is not a byte count is its plain 400 (the hand-written
# server answered a JSON 400), and it closes the connection (recv returns b"", no timeout).
@pytest.mark.parametrize("length", [b"abc", b"-5", b"2, 3"])
def test_a_body_of_unknown_length_gets_a_400_and_a_closed_connection(length):
    with market() as m:
        status, _ = raw_answer(m.url, b"POST /bids HTTP/1.1\r\nHost: market\r\nContent-Length: " + length + b"\r\n\r\n{}")
        assert status == 400 and m.book.stats()["bids"] == 0


def test_a_chunked_bid_is_read_like_any_other():
    # the hand-written server refused chunked bodies with 411; uvicorn reads them
    payload = json.dumps(bid(T0 + 3 * STEP)).encode()
    with market() as m:
        response = httpx.post(m.url + "/bids", content=iter([payload[:10], payload[10:]]), timeout=10)
        assert response.status_code == 201 and response.request.headers["Transfer-Encoding"] == "chunked"
        assert m.book.get("bid-1")["status"] == "accepted"


def test_a_body_beyond_the_limit_is_a_413_and_nothing_is_kept():
    from devtools.market.api import LIMITS

    with market() as m:
        status, body = call(m.url + "/bids", "POST", raw=b" " * (LIMITS.max_body_bytes + 1))
        assert status == 413 and "exceeds the limit" in body["error"] and m.book.stats()["bids"] == 0


def test_a_bid_for_an_interval_beyond_any_date_is_refused_and_not_kept():
    with market() as m:
        status, body = call(m.url + "/bids", "POST", bid(3_000_000_000_000_000_000, "far"))
        assert status == 422 and "more than 7 days" in body["error"]
        assert call(m.url + "/bids/far")[0] == 404 and m.book.stats()["bids"] == 0


def test_an_interval_is_cleared_at_its_price_and_the_award_shows_on_the_bid():
    delivered, wall = [], HeldWall()
    with market(start_ms=T0 - 2 * STEP + 1000, speed=600, deliver=lambda p, a, _bids: delivered.append((p, a)),
                wall=wall) as m:
        assert call(m.url + "/bids", "POST", bid(T0))[0] == 201
        wall.release()
        deadline = time.monotonic() + 10
        while call(m.url + "/bids/bid-1")[1]["status"] != "cleared":
            assert time.monotonic() < deadline, "the interval was never cleared"
            time.sleep(0.1)
        body = call(m.url + "/bids/bid-1")[1]
    price = float(price_series(T0, 1, seed=3)[0])
    assert body["award"] == {"clearing_price_usd_per_mwh": price, "awarded_w": awarded_w([(-20.0, -2000.0), (30.0, 5000.0)], price)}
    prices = [p for p, _ in delivered]
    assert [p["interval_start"] for p in prices[:3]] == [T0 - 2 * STEP, T0 - STEP, T0]
    assert [a for p, a in delivered if p["interval_start"] == T0][0][0]["bid_id"] == "bid-1"


def test_journal_keeps_accepted_bids_and_cleared_intervals_across_a_restart(tmp_path):
    journal = tmp_path / "market.jsonl"
    with market(journal=journal) as m:
        assert call(m.url + "/bids", "POST", bid(T0 + 3 * STEP))[0] == 201
        first = call(m.url + "/bids/bid-1")[1]
    with market(journal=journal) as m:
        assert call(m.url + "/bids/bid-1") == (200, first)
        assert call(m.url + "/bids", "POST", bid(T0 + 3 * STEP))[0] == 200
        assert call(m.url + "/bids", "POST", bid(T0 + 3 * STEP, node_path="other"))[0] == 409
    # Restarted after the interval: the journaled bid is cleared late, exactly once.
    delivered = []
    with market(start_ms=T0 + 5 * STEP, journal=journal, deliver=lambda p, a, _bids: delivered.append((p, a))) as m:
        deadline = time.monotonic() + 10
        while call(m.url + "/bids/bid-1")[1]["status"] != "cleared":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert [p["interval_start"] for p, a in delivered if a] == [T0 + 3 * STEP]
    with market(start_ms=T0 + 6 * STEP, journal=journal, deliver=lambda p, a, _bids: delivered.append((p, a))) as m:
        time.sleep(0.3)
        assert call(m.url + "/bids/bid-1")[1]["status"] == "cleared"
    assert [p["interval_start"] for p, a in delivered if a] == [T0 + 3 * STEP]


def test_status_after_a_restart_names_the_last_interval_the_journal_cleared(tmp_path):
    journal = tmp_path / "market.jsonl"
    # The market clears an interval as it starts; the journal already holds the clearing of the one
    # running at the restart, so the restarted market clears nothing and must still name it.
    OrderBook("SP15", gate_closure_ms=STEP, journal=journal).commit_clearing(T0 + STEP, 50.0, [])
    with market(start_ms=T0 + STEP + 1000, journal=journal) as m:
        time.sleep(0.3)  # the clearing thread has run its first pass
        status = call(m.url + "/status")[1]
    assert status["last_cleared_interval_start"] == "2026-05-28T20:35:00Z"
    assert status["cleared_intervals"] == 1


def test_a_torn_last_journal_line_is_ignored_and_a_corrupt_middle_line_stops_the_start(tmp_path):
    journal = tmp_path / "market.jsonl"
    with market(journal=journal) as m:
        call(m.url + "/bids", "POST", bid(T0 + 3 * STEP))
    text = journal.read_text()
    journal.write_text(text + '{"type": "bid", "bid": {"bid_')
    assert OrderBook("SP15", STEP, journal).get("bid-1")["bid_id"] == "bid-1"
    journal.write_text("garbage\n" + text)
    with pytest.raises(JournalError, match=":1:"):
        OrderBook("SP15", STEP, journal)


def test_a_failed_delivery_is_retried_and_the_interval_cleared_once():
    attempts = []

    def flaky(price, awards, bids):
        attempts.append(price["interval_start"])
        if len(attempts) == 1:
            raise RuntimeError("broker down")

    book = OrderBook("SP15", gate_closure_ms=STEP)
    with MarketService(book, MarketClock(T0, 1.0), deliver=flaky, log=lambda _: None, retry_s=0.05):
        deadline = time.monotonic() + 5
        while not book.is_cleared(T0):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert attempts[:2] == [T0, T0]
