"""The market's rules, as tables: awards at a clearing price, what a valid bid is, the gate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.bids import Bid, BidPair, net_quantity_w
from devtools.market.clearing import (
    BidRejected,
    MarketBid,
    awarded_w,
    check_gate,
    clear_interval,
    parse_bid,
    parse_time_ms,
)

T0 = 1_780_000_200_000  # 2026-05-28T20:30:00Z, on the 5-minute grid
assert T0 % 300_000 == 0
GATE_MS = 300_000

AWARDS = [
    # pairs (price, quantity_w), clearing price, awarded_w
    pytest.param([(50.0, 1000.0)], 60.0, 1000.0, id="sell-below-clearing-is-awarded"),
    pytest.param([(50.0, 1000.0)], 50.0, 1000.0, id="sell-at-clearing-is-awarded"),
    pytest.param([(50.0, 1000.0)], 49.99, 0.0, id="sell-above-clearing-is-not"),
    pytest.param([(10.0, -800.0)], 5.0, -800.0, id="buy-above-clearing-is-awarded"),
    pytest.param([(10.0, -800.0)], 10.0, -800.0, id="buy-at-clearing-is-awarded"),
    pytest.param([(10.0, -800.0)], 10.01, 0.0, id="buy-below-clearing-is-not"),
    pytest.param([(-5.0, -500.0), (0.0, -300.0), (40.0, 700.0), (90.0, 300.0)], 100.0, 1000.0, id="all-sells-at-a-high-price"),
    pytest.param([(-5.0, -500.0), (0.0, -300.0), (40.0, 700.0), (90.0, 300.0)], 45.0, 700.0, id="first-sell-step-only"),
    pytest.param([(-5.0, -500.0), (0.0, -300.0), (40.0, 700.0), (90.0, 300.0)], 20.0, 0.0, id="between-the-sides-nothing"),
    pytest.param([(-5.0, -500.0), (0.0, -300.0), (40.0, 700.0), (90.0, 300.0)], -1.0, -300.0, id="first-buy-step-only"),
    pytest.param([(-5.0, -500.0), (0.0, -300.0), (40.0, 700.0), (90.0, 300.0)], -150.0, -800.0, id="all-buys-at-the-floor"),
]


@pytest.mark.parametrize("pairs, clearing, expected", AWARDS)
def test_awarded_quantity_is_the_curve_at_the_clearing_price(pairs, clearing, expected):
    assert awarded_w(pairs, clearing) == expected


@given(
    buys=st.lists(st.tuples(st.floats(-150, 0), st.floats(-1e6, -1)), max_size=3),
    sells=st.lists(st.tuples(st.floats(0.01, 2000), st.floats(1, 1e6)), max_size=3),
    clearing=st.floats(-200, 2100),
)
def test_the_market_awards_what_the_bidder_expects(buys, sells, clearing):
    pairs = buys + sells
    expected = net_quantity_w(Bid(None, tuple(BidPair(p, q) for p, q in pairs)), clearing)
    assert math.isclose(awarded_w(pairs, clearing), expected, abs_tol=1e-6)


def payload(**overrides):
    body = {
        "bid_id": "b-1",
        "node_path": "us/ca/sf",
        "pricing_node": "SP15",
        "interval_start": "2026-05-28T20:30:00Z",
        "pairs": [{"price_usd_per_mwh": 40.0, "quantity_w": 1000.0}, {"price_usd_per_mwh": -5.0, "quantity_w": -500.0}],
    }
    body.update(overrides)
    return body


def test_a_valid_bid_is_parsed_with_its_pairs_sorted_by_price():
    bid = parse_bid(payload(), pricing_node="SP15", submitted_at_ms=T0 - 10**6)
    assert bid == MarketBid("b-1", "us/ca/sf", "SP15", T0, ((-5.0, -500.0), (40.0, 1000.0)), T0 - 10**6)
    assert parse_bid(payload(interval_start=T0), pricing_node="SP15", submitted_at_ms=T0).interval_start_ms == T0


REJECTED = [
    pytest.param(["not", "an", "object"], 400, "JSON object", id="not-an-object"),
    pytest.param(payload(bid_id=""), 422, "bid_id", id="empty-bid-id"),
    pytest.param(payload(node_path=7), 422, "node_path", id="node-path-not-a-string"),
    pytest.param(payload(pricing_node="NP15"), 422, "clears 'SP15'", id="other-pricing-node"),
    pytest.param({k: v for k, v in payload().items() if k != "interval_start"}, 422, "interval_start is missing", id="no-interval"),
    pytest.param(payload(interval_start="yesterday"), 422, "ISO 8601", id="interval-not-a-time"),
    pytest.param(payload(interval_start="2026-05-28T20:31:00Z"), 422, "5-minute", id="interval-off-grid"),
    pytest.param(payload(pairs=[]), 422, "non-empty", id="no-pairs"),
    pytest.param(payload(pairs=[{"price_usd_per_mwh": "40", "quantity_w": 1}]), 422, "finite number", id="price-a-string"),
    pytest.param(payload(pairs=[{"price_usd_per_mwh": float("nan"), "quantity_w": 1}]), 422, "finite", id="price-nan"),
    pytest.param(payload(pairs=[{"price_usd_per_mwh": 4, "quantity_w": 0}]), 422, "quantity_w is 0", id="zero-quantity"),
    pytest.param(payload(pairs=[{"price_usd_per_mwh": 4, "quantity_w": 1}] * 21), 422, "at most 20", id="too-many-steps"),
    pytest.param(
        payload(pairs=[{"price_usd_per_mwh": 50, "quantity_w": -1}, {"price_usd_per_mwh": 40, "quantity_w": 1}]),
        422, "crosses itself", id="buy-above-sell",
    ),
    # an integer beyond any double (JSON allows it): it raised OverflowError and the connection dropped
    pytest.param(payload(pairs=[{"price_usd_per_mwh": 10**400, "quantity_w": 1}]), 422, "finite number",
                 id="price-beyond-a-double"),
    # a start beyond the year 9999 was kept, then no answer could show it (the connection dropped, for good)
    pytest.param(payload(interval_start=3_000_000_000_000_000_000), 422, "more than 7 days from market time",
                 id="interval-beyond-any-date"),
    pytest.param(payload(interval_start="9999-12-31T23:55:00Z"), 422, "more than 7 days", id="interval-years-ahead"),
    pytest.param(payload(interval_start="2026-05-20T20:30:00Z"), 422, "more than 7 days", id="interval-long-past"),
]


@pytest.mark.parametrize("body, status, message", REJECTED)
def test_invalid_bids_are_rejected_saying_what_is_wrong(body, status, message):
    with pytest.raises(BidRejected, match=message) as caught:
        parse_bid(body, pricing_node="SP15", submitted_at_ms=T0 - 10**6)
    assert caught.value.status == status
    assert len(str(caught.value)) < 400, "a huge value is not echoed whole"


@pytest.mark.parametrize(
    "now_ms, accepted",
    [(T0 - GATE_MS - 1, True), (T0 - GATE_MS, False), (T0 - 1, False), (T0 + 1, False)],
    ids=["just-before-gate", "at-gate", "just-before-interval", "during-interval"],
)
def test_gate_closes_before_the_interval(now_ms, accepted):
    bid = parse_bid(payload(), pricing_node="SP15", submitted_at_ms=now_ms)
    if accepted:
        check_gate(bid, now_ms, GATE_MS)
    else:
        with pytest.raises(BidRejected, match="gate closed.*300 s before") as caught:
            check_gate(bid, now_ms, GATE_MS)
        assert caught.value.status == 422


def test_clearing_gives_one_award_per_bid_of_the_interval_zero_included():
    bids = [
        MarketBid("b", "n/1", "SP15", T0, ((40.0, 1000.0),), 0),
        MarketBid("a", "n/2", "SP15", T0, ((10.0, -500.0),), 0),
        MarketBid("c", "n/3", "SP15", T0 + 300_000, ((1.0, 5.0),), 0),
    ]
    awards = clear_interval(bids, T0, 30.0)
    assert [(a["bid_id"], a["awarded_w"]) for a in awards] == [("a", 0.0), ("b", 0.0)]
    assert awards[0] == {
        "bid_id": "a", "node_path": "n/2", "interval_start": T0, "interval_end": T0 + 300_000,
        "clearing_price_usd_per_mwh": 30.0, "awarded_w": 0.0,
    }
    assert [a["awarded_w"] for a in clear_interval(bids, T0, 45.0)] == [0.0, 1000.0]


@pytest.mark.parametrize(
    "text, ms",
    [("2026-05-28T20:30:00Z", T0), ("2026-05-28T21:30:00+01:00", T0), ("2026-05-28T20:30:00", T0), (T0, T0)],
)
def test_times_are_iso_or_epoch_ms(text, ms):
    assert parse_time_ms(text) == ms
