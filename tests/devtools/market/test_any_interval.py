"""The market simulator at 15-minute and hourly intervals: prices, bids on its grid, clearing, `vpp market --interval`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main
from devtools.market.api import MarketClock, MarketService
from devtools.market.book import OrderBook
from devtools.market.clearing import BidRejected, parse_bid
from devtools.market.prices import check_interval_ms, price_series
from held_clock import HeldWall
from models.price_series import parse_prices

T0 = 1_780_002_000_000  # 2026-05-28T21:00:00Z: on every grid up to an hour
MINUTE = 60_000
HOUR = 3_600_000


@pytest.mark.parametrize("interval_min", [15, 30, 60])
def test_a_longer_interval_is_priced_at_the_mean_of_its_five_minute_prices(interval_min) -> None:
    per = interval_min // 5
    five = price_series(T0, 3 * per, seed=4)
    longer = price_series(T0, 3, seed=4, interval_ms=interval_min * MINUTE)
    np.testing.assert_allclose(longer, five.reshape(3, per).mean(axis=1).round(2))


@pytest.mark.parametrize("interval_min", [15, 60])
def test_a_price_is_a_function_of_seed_and_interval_start_whatever_range_is_asked(interval_min) -> None:
    step = interval_min * MINUTE
    whole = price_series(T0, 2 * 24 * 60 // interval_min, seed=9, interval_ms=step)
    assert np.array_equal(price_series(T0 + 7 * step, 5, seed=9, interval_ms=step), whole[7:12])
    assert price_series(T0 + 3 * step, 1, seed=9, interval_ms=step)[0] == whole[3]
    assert not np.array_equal(price_series(T0, 5, seed=10, interval_ms=step), whole[:5])


@pytest.mark.parametrize(("interval_ms", "ok"), [
    (5 * MINUTE, True), (15 * MINUTE, True), (HOUR, True), (4 * HOUR, True),
    (7 * MINUTE, False), (0, False), (100 * MINUTE, False), (2 * 24 * HOUR, False),
])
def test_the_simulator_takes_intervals_of_whole_five_minutes_that_divide_a_day(interval_ms, ok) -> None:
    if ok:
        assert check_interval_ms(interval_ms) == interval_ms
    else:
        with pytest.raises(ValueError, match="multiple of 5 minutes that divides a day"):
            check_interval_ms(interval_ms)


def bid_payload(start_ms: int) -> dict:
    return {"bid_id": "b1", "node_path": "us/ca", "pricing_node": "SP15", "interval_start": start_ms,
            "pairs": [{"price_usd_per_mwh": 30.0, "quantity_w": 5_000.0}]}


@pytest.mark.parametrize(("interval_ms", "start_ms", "error"), [
    (HOUR, T0 + HOUR, None),
    (HOUR, T0 + 5 * MINUTE, "not the start of a 1-hour interval: this market's intervals start every 1 hour"),
    (15 * MINUTE, T0 + 45 * MINUTE, None),
    (15 * MINUTE, T0 + 50 * MINUTE, "not the start of a 15-minute interval: this market's intervals start every 15 minutes"),
])
def test_a_bid_must_start_on_the_market_s_grid(interval_ms, start_ms, error) -> None:
    if error is None:
        assert parse_bid(bid_payload(start_ms), pricing_node="SP15", submitted_at_ms=T0,
                         interval_ms=interval_ms).interval_start_ms == start_ms
    else:
        with pytest.raises(BidRejected, match=error):
            parse_bid(bid_payload(start_ms), pricing_node="SP15", submitted_at_ms=T0, interval_ms=interval_ms)


def test_an_hourly_market_clears_hour_long_intervals_and_publishes_their_price() -> None:
    delivered = []
    book = OrderBook("SP15", gate_closure_ms=5 * MINUTE, interval_ms=HOUR)
    service = MarketService(book, MarketClock(T0 + 10 * MINUTE, 1.0, HeldWall()), seed=3, log=lambda _: None,
                            deliver=lambda price, awards, bids: delivered.append((price, awards, bids)))
    status = service.status()
    assert status["interval_s"] == 3600 and status["first_open_interval_start_ms"] == T0 + HOUR
    assert book.submit(bid_payload(T0 + HOUR), T0 + 10 * MINUTE)[0] == 201
    assert book.submit({**bid_payload(T0 + 90 * MINUTE), "bid_id": "b2"}, T0 + 10 * MINUTE)[0] == 422
    (award,) = service.clear(T0 + HOUR)
    ((price, awards, bids),) = delivered
    expected = float(price_series(T0 + HOUR, 1, seed=3, interval_ms=HOUR)[0])
    assert price == {"pricing_node": "SP15", "interval_start": T0 + HOUR, "interval_end": T0 + 2 * HOUR,
                     "price_usd_per_mwh": expected}
    assert awards == [award] and [b["bid_id"] for b in bids] == ["b1"]
    assert (award["interval_start"], award["interval_end"]) == (T0 + HOUR, T0 + 2 * HOUR)
    assert award["awarded_w"] == (5_000.0 if expected >= 30.0 else 0.0)


def test_vpp_market_writes_history_at_its_interval_by_flag_or_by_the_setting(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "quarter-hours.csv"
    assert main(["market", "--history-days", "2", "--interval", "15m", "--out", str(out), "--end",
                 "2026-06-01T00:00:00Z"]) == 0
    assert json.loads(capsys.readouterr().out)["intervals"] == 2 * 96
    series = parse_prices(out.read_text(), str(out))
    assert series.interval.total_seconds() == 900 and len(series.points) == 192
    assert series.points[-1].interval_start.isoformat() == "2026-05-31T23:45:00+00:00"

    monkeypatch.setenv("VPP_MARKET_INTERVAL_S", "3600")
    assert main(["market", "--history-days", "1", "--out", str(out), "--end", "2026-06-01T00:00:00Z"]) == 0
    assert json.loads(capsys.readouterr().out)["interval_s"] == 3600
    assert parse_prices(out.read_text(), str(out)).interval.total_seconds() == 3600

    assert main(["market", "--history-days", "1", "--out", str(out), "--interval", "7m"]) == 1
    assert "--interval 420 s: a market interval of 420000 ms cannot be simulated" in capsys.readouterr().err
