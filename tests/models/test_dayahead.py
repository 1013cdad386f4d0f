"""The day-ahead forecaster: no look-ahead, and it learns what the prices owe to a regressor."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from models.backtest import metrics, naive_forecasts, run_backtest
from models.dayahead import day_grid, features
from models.features import epoch_ms
from models.price_series import parse_prices
from synthetic_prices import synthetic_csv


def test_a_days_inputs_never_read_its_own_prices_or_later_ones():
    series = parse_prices(synthetic_csv(30, 60), "s.csv")
    grid = day_grid(series, 3_600_000)
    before = features(grid)
    tampered = grid.prices.copy()
    tampered[20:] += 1000.0
    after = features(type(grid)(grid.first_day, tampered, grid.regressors, grid.interval_ms, grid.utc_offset_ms))
    np.testing.assert_array_equal(before[:21], after[:21])  # day 20's inputs: prices up to day 19
    assert not np.allclose(before[21:], after[21:])


def test_the_weekly_naive_takes_last_week_on_mondays_and_weekends():
    prices = np.arange(14 * 2, dtype=float).reshape(14, 2)
    first_day = (datetime(2024, 3, 4, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days  # a Monday
    yesterday, weekly = naive_forecasts(prices, first_day, 7)  # day 7: a Monday
    np.testing.assert_array_equal(yesterday, prices[6])
    np.testing.assert_array_equal(weekly, prices[0])
    _, weekly_tuesday = naive_forecasts(prices, first_day, 8)
    np.testing.assert_array_equal(weekly_tuesday, prices[7])


@pytest.mark.parametrize("options", [{}, {"shrinkage": "lasso", "penalty_days": 7}],
                         ids=["ridge", "lasso-penalties-weekly"])
def test_the_backtest_learns_the_regressor_and_beats_both_naive_baselines(options):
    series = parse_prices(synthetic_csv(45, 60, seed=3), "s.csv")
    result = run_backtest(series, from_ms=epoch_ms(datetime(2024, 4, 4, tzinfo=UTC)) - 3_600_000,
                          utc_offset_ms=3_600_000, **options)
    actual, forecast = result.table[:, 0], result.table[:, 1]
    model = metrics(actual, forecast)["mae"]
    assert result.days == 14
    assert model < 0.6 * metrics(actual, result.table[:, 5])["mae"]
    assert model < 0.6 * metrics(actual, result.table[:, 6])["mae"]
    assert model < 3.0  # the noise alone is 1.6 on average (normal, sigma 2)
    low, high = result.table[:, 2], result.table[:, 4]
    assert np.all(low <= high)
