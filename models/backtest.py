"""Rolling-origin day-ahead backtest of ``models.dayahead``, its error metrics and the naive baselines.

For each local day from the first one asked: the ensemble calibrated on the
days before it (recalibrated every ``refit_days``, each window warm-started
from its last fit; the LASSO's penalties chosen anew every ``penalty_days``,
in between the last ones are kept), the forecast of every interval of that day from the prices
up to the day before and that day's regressors. p10/p50/p90 are the forecast
plus the 10/50/90 % quantiles of the backtest's own errors over the previous
``CONFORMAL_DAYS`` days (a rolling split-conformal interval; ``WARMUP_DAYS``
days before the first reported one seed it when the history allows).

Naive baselines (Lago et al. 2021): same time yesterday, and the benchmark
literature's weekly naive (day D-7 on Mondays, Saturdays and Sundays, D-1
otherwise). Metrics: MAE, RMSE, sMAPE (``mean(|a - f| / ((|a| + |f|) / 2))``,
in %, as epftoolbox).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.dayahead import MIN_DAYS, PRICE_LAGS, WINDOWS_DAYS, _windows, calibrate, day_grid, features, forecast_day
from models.price_series import PriceSeries

__all__ = ["BacktestResult", "CONFORMAL_DAYS", "WARMUP_DAYS", "metrics", "naive_forecasts", "run_backtest"]

CONFORMAL_DAYS = 56
WARMUP_DAYS = 28
_MIN_POOL_DAYS = 7


@dataclass(frozen=True)
class BacktestResult:
    """Per reported interval: start (epoch ms), actual, forecast, p10, p50, p90, naive D-1, naive weekly."""

    starts_ms: np.ndarray
    table: np.ndarray  # intervals x 7: actual, forecast, p10, p50, p90, naive_1d, naive_weekly
    days: int


def naive_forecasts(prices: np.ndarray, first_day: int, day: int) -> tuple[np.ndarray, np.ndarray]:
    """``(same time yesterday, weekly naive)`` for ``day`` of a days x n price grid."""
    weekday = (first_day + day + 3) % 7  # 0 = Monday
    yesterday = prices[day - 1]
    return yesterday, prices[day - 7] if weekday in (0, 5, 6) else yesterday


def metrics(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    known = ~np.isnan(actual) & ~np.isnan(forecast)
    a, f = actual[known], forecast[known]
    if not known.any():  # e.g. quantiles of a backtest too short to have any yet
        return {"mae": float("nan"), "rmse": float("nan"), "smape_pct": float("nan"), "intervals": 0}
    error = a - f
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.abs(error) / ((np.abs(a) + np.abs(f)) / 2)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "smape_pct": float(100 * np.mean(np.nan_to_num(ratio))),
        "intervals": int(known.sum()),
    }


def run_backtest(
    series: PriceSeries,
    *,
    from_ms: int,
    utc_offset_ms: int,
    refit_days: int = 1,
    windows: tuple[int, ...] = WINDOWS_DAYS,
    progress: Callable[[int, int], None] | None = None,
    shrinkage: str = "ridge",
    penalty_days: int | None = None,
) -> BacktestResult:
    """The backtest from the local day holding ``from_ms`` to the last day with a known price."""
    penalty_days = refit_days if penalty_days is None else penalty_days
    if refit_days < 1 or penalty_days < 1:
        raise ValueError(f"refit_days and penalty_days must be 1 or more, got {refit_days} and {penalty_days}")
    grid = day_grid(series, utc_offset_ms)
    x, y = features(grid), grid.prices
    first = int((from_ms + utc_offset_ms) // 86_400_000) - grid.first_day
    earliest = PRICE_LAGS[-1] + MIN_DAYS
    if first < earliest:
        raise ValueError(f"the backtest's first day needs {earliest} days of history before it (a week of lags and "
                         f"{MIN_DAYS} days to calibrate on): start it later")
    last = int(np.flatnonzero(~np.isnan(y).all(axis=1))[-1])
    if first > last:
        raise ValueError("no price on or after the backtest's first day")
    start = max(earliest, first - WARMUP_DAYS)
    members: dict[int, object] = {}
    pool: deque[np.ndarray] = deque(maxlen=CONFORMAL_DAYS)
    rows, starts = [], []
    for day in range(start, last + 1):
        if (day - start) % refit_days == 0 or not members:
            sizes = _windows(day - PRICE_LAGS[-1], windows)
            keep_penalty = (day - start) % penalty_days != 0
            members = {k: calibrate(x[day - w: day], y[day - w: day], members.get(k), shrinkage,
                                    reuse_penalty=keep_penalty) for k, w in enumerate(sizes)}
        point = forecast_day(members.values(), x[day])
        if len(pool) >= _MIN_POOL_DAYS:
            q10, q50, q90 = np.nanquantile(np.concatenate(pool), [0.1, 0.5, 0.9])
        else:
            q10 = q50 = q90 = np.nan
        error = y[day] - point
        pool.append(error[~np.isnan(error)])
        if day >= first:
            naive_1d, naive_weekly = naive_forecasts(y, grid.first_day, day)
            rows.append(np.column_stack([y[day], point, point + q10, point + q50, point + q90, naive_1d, naive_weekly]))
            starts.extend(grid.start_ms(day, s) for s in range(grid.per_day))
        if progress is not None:
            progress(day - start + 1, last - start + 1)
    return BacktestResult(np.array(starts), np.concatenate(rows), last - first + 1)
