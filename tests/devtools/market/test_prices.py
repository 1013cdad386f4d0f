"""The price generator: deterministic under a seed, one series whatever the range asked, a realistic shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from devtools.market.prices import DAY_MS, INTERVAL_MS, PriceModel, generate_prices, local_day_and_slot, price_series

MODEL = PriceModel()
# Local midnight of the default node (UTC-8) on 2026-03-01.
START_MS = int(datetime(2026, 3, 1, 8, tzinfo=UTC).timestamp() * 1000)
DAYS = 120


def days_of(seed: int = 0, days: int = DAYS) -> np.ndarray:
    return price_series(START_MS, days * 288, seed=seed, model=MODEL).reshape(days, 288)


def test_same_seed_same_prices_other_seed_other_prices():
    a = price_series(START_MS, 2000, seed=5)
    assert np.array_equal(a, price_series(START_MS, 2000, seed=5))
    assert not np.array_equal(a, price_series(START_MS, 2000, seed=6))


def test_a_price_depends_on_its_interval_not_on_the_range_asked():
    whole = price_series(START_MS, 3 * 288, seed=1)
    middle = price_series(START_MS + 400 * INTERVAL_MS, 77, seed=1)
    assert np.array_equal(whole[400:477], middle)
    assert price_series(START_MS + 5 * INTERVAL_MS, 1, seed=1)[0] == whole[5]


def test_generate_prices_gives_consecutive_utc_intervals():
    start = datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
    points = generate_prices(start, 10, seed=2)
    assert [p.interval_start for p in points] == [start + k * timedelta(minutes=5) for k in range(10)]
    assert all(p.interval_start.tzinfo is not None for p in points)


@pytest.mark.parametrize("start_ms", [START_MS + 1, START_MS + 60_000])
def test_start_off_the_five_minute_grid_is_refused(start_ms):
    with pytest.raises(ValueError, match="5-minute"):
        price_series(start_ms, 1)


def test_local_day_and_slot_follow_the_node_offset():
    assert local_day_and_slot(START_MS, MODEL.utc_offset_ms)[1] == 0
    assert local_day_and_slot(START_MS + 12 * 3_600_000, MODEL.utc_offset_ms)[1] == 144
    assert local_day_and_slot(START_MS + DAY_MS, MODEL.utc_offset_ms)[0] == local_day_and_slot(START_MS, MODEL.utc_offset_ms)[0] + 1


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_midday_solar_dip_goes_negative_on_some_days_and_nights_do_not(seed):
    days = days_of(seed)
    midday = days[:, 10 * 12 : 15 * 12]
    assert (midday.min(axis=1) < 0).sum() >= 5
    assert midday.mean() < days.mean() - 15
    evening_and_night = days[:, 18 * 12 : 23 * 12]
    assert (evening_and_night < 0).mean() < 0.01


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_evening_peak_above_the_daily_mean(seed):
    days = days_of(seed)
    evening_peak = days[:, 17 * 12 : 21 * 12].max(axis=1)
    assert (evening_peak > days.mean(axis=1) + 20).mean() > 0.95


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_spikes_occur_but_rarely(seed):
    prices = days_of(seed).ravel()
    spikes = prices > 250
    assert 0 < spikes.mean() < 0.005
    assert prices.max() <= MODEL.cap_usd_per_mwh and prices.min() >= MODEL.floor_usd_per_mwh


def test_weekends_are_cheaper_than_weekdays():
    days = days_of(0)
    day0, _ = local_day_and_slot(START_MS, MODEL.utc_offset_ms)
    weekend = np.array([(day0 + k + 3) % 7 >= 5 for k in range(DAYS)])
    assert days[weekend].mean() < days[~weekend].mean() - 3


def test_prices_move_from_interval_to_interval():
    prices = days_of(0, 30).ravel()
    steps = np.abs(np.diff(prices))
    assert 3 < np.median(steps) < 15
