"""Day-ahead price forecaster for any interval: a LEAR ensemble (Lago et al. 2021, Applied Energy 293:116983).

For a target day ``D`` (local days of ``utc_offset_ms``) with ``n`` intervals,
one model per interval of the day, all on the same inputs (as epftoolbox's
LEAR, which this follows for hourly data exactly in its structure):

* the prices of days ``D-1, D-2, D-3, D-7`` at every hour (sub-hourly prices
  averaged per hour, so a 5-minute market has 96 price inputs, not 1152);
* each regressor (load, wind and solar forecasts, ...) on ``D``, ``D-1`` and
  ``D-7`` at every hour;
* day-of-week dummies.

Prices and inputs go through the variance-stabilising transform of
Uniejewski et al. (2018): ``asinh((v - median) / MAD)`` per column over the
calibration window. Each interval's model is a ridge regression with its
penalty chosen by GCV (the fast default) or, as epftoolbox, a LASSO with its
penalty chosen by AIC on the LARS path (``models.lasso``, scikit-learn). The
forecast averages models calibrated on several windows (``WINDOWS_DAYS``: 56,
84, 1092 and 1456 days, the paper's ensemble). As epftoolbox cuts them, a
window of ``w`` days ends the day before the target and its first week only
feeds the lags: ``w - 7`` days are regressed on. A window longer than the
history is the whole history.

Quantiles are conformal: ``residual_quantiles`` are the 10/50/90 % quantiles of
out-of-sample errors (a holdout of the last ``HOLDOUT_DAYS`` days at fit time;
the backtest uses its own rolling errors), added to the forecast.

Contract (as ``models.forecast``): ``fit(series, ...) -> DayAheadModel``,
``predict(model, series)``, ``save``/``load`` (``metadata.json`` +
``coefficients.npz``). ``forecast_ahead`` forecasts any span from an origin
(the autobidder's rolling day ahead): day by day, a day's unknown prices
taken as its forecast when the next day's lags need them.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.features import epoch_ms
from models.lasso import LassoPath, fit_lasso_aic, fit_ridge_gcv
from models.price_series import PriceSeries

__all__ = ["DayGrid", "DayAheadModel", "HOLDOUT_DAYS", "WINDOWS_DAYS", "calibrate", "day_grid", "fit", "forecast_ahead",
           "quantile_band",
           "forecast_day", "load", "predict", "save"]

KIND = "dayahead_lear"
#: The per-interval regressions: ridge (GCV, the default: fast) or LASSO (AIC, as epftoolbox's LEAR).
SHRINKAGE = {"ridge": fit_ridge_gcv, "lasso": fit_lasso_aic}
FORMAT_VERSION = 1
WINDOWS_DAYS = (56, 84, 1092, 1456)
PRICE_LAGS = (1, 2, 3, 7)
REGRESSOR_LAGS = (0, 1, 7)
HOLDOUT_DAYS = 14
#: The fewest days a calibration window may have (with 7 days of lags before it).
MIN_DAYS = 14
_DAY_MS = 86_400_000
_MAD_TO_SIGMA = 1 / 0.6744897501960817  # statsmodels' mad: a normal's standard deviation


@dataclass(frozen=True)
class DayGrid:
    """A series on local days: ``prices`` days x n (NaN unknown), ``regressors`` days x n x k, ``first_day`` its index."""

    first_day: int
    prices: np.ndarray
    regressors: np.ndarray
    interval_ms: int
    utc_offset_ms: int

    @property
    def per_day(self) -> int:
        return self.prices.shape[1]

    def start_ms(self, day: int, slot: int = 0) -> int:
        return (self.first_day + day) * _DAY_MS - self.utc_offset_ms + slot * self.interval_ms


def day_grid(series: PriceSeries, utc_offset_ms: int, extra_days: int = 0) -> DayGrid:
    """``series`` on whole local days (the first and last partly filled, NaN elsewhere), plus ``extra_days`` empty days."""
    interval_ms = int(series.interval.total_seconds() * 1000)
    prices = np.full(len(series.starts), np.nan)
    prices[: len(series.points)] = [p.price_usd_per_mwh for p in series.points]
    starts = np.array([epoch_ms(s) for s in series.starts])
    return _grid(starts, prices, series.regressors, interval_ms, utc_offset_ms, extra_days)


def _grid(starts_ms: np.ndarray, prices: np.ndarray, regressors: np.ndarray, interval_ms: int, utc_offset_ms: int,
          extra_days: int = 0) -> DayGrid:
    """Rows (interval starts, prices with NaN unknown, regressors rows x k) on whole local days."""
    per_day = _DAY_MS // interval_ms
    local = starts_ms + utc_offset_ms
    first_day = int(local[0] // _DAY_MS)
    index = (local - first_day * _DAY_MS) // interval_ms
    days = int(index[-1] // per_day) + 1 + extra_days
    grid_prices = np.full(days * per_day, np.nan)
    grid_prices[index] = prices
    grid_regressors = np.full((days * per_day, regressors.shape[1]), np.nan)
    grid_regressors[index] = regressors
    return DayGrid(first_day, grid_prices.reshape(days, per_day), grid_regressors.reshape(days, per_day, -1),
                   interval_ms, utc_offset_ms)


def _hourly(values: np.ndarray) -> np.ndarray:
    """Per-hour means of ``... x n`` (n a multiple of the hours' blocks), NaN where the hour has none."""
    blocks = math.gcd(values.shape[-1], 24)
    shaped = values.reshape(values.shape[:-1] + (blocks, values.shape[-1] // blocks))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an hour without any value is NaN, as meant
        return np.nanmean(shaped, axis=-1)


def features(grid: DayGrid) -> np.ndarray:
    """Inputs of every day (days x features; NaN where a lag is unknown); dummies last (7 columns)."""
    days = grid.prices.shape[0]
    hourly_prices = _hourly(grid.prices)
    hourly_regressors = _hourly(np.moveaxis(grid.regressors, -1, 1))  # days x k x hours
    columns = []

    def lagged(values: np.ndarray, lag: int) -> np.ndarray:
        out = np.full_like(values, np.nan)
        out[lag:] = values[: days - lag] if lag else values
        return out.reshape(days, -1)

    columns += [lagged(hourly_prices, lag) for lag in PRICE_LAGS]
    columns += [lagged(hourly_regressors, lag) for lag in REGRESSOR_LAGS]
    weekday = (grid.first_day + np.arange(days) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    columns.append(np.eye(7)[weekday])
    return np.concatenate(columns, axis=1)


@dataclass(frozen=True)
class _Scaler:
    median: np.ndarray
    mad: np.ndarray

    @staticmethod
    def of(values: np.ndarray) -> "_Scaler":
        middle = np.median if not np.isnan(values).any() else np.nanmedian  # nanmedian is 10x slower
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (a lag before the data): no scale
            median = np.nan_to_num(middle(values, axis=0))
            mad = middle(np.abs(values - median), axis=0) * _MAD_TO_SIGMA
        return _Scaler(median, np.where(np.isfinite(mad) & (mad > 1e-9), mad, 1.0))

    def forward(self, values: np.ndarray) -> np.ndarray:
        return np.arcsinh((values - self.median) / self.mad)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.sinh(values) * self.mad + self.median


@dataclass(frozen=True)
class _Member:
    """One calibration window's fit: scalers, centring and the chosen coefficients."""

    x_scale: _Scaler
    x_mean: np.ndarray
    y_scale: _Scaler
    y_mean: np.ndarray
    coef: np.ndarray
    path: LassoPath | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.x_scale.forward(x)
        z[:, -7:] = x[:, -7:]
        z = np.where(np.isnan(z), 0.0, z) - self.x_mean
        return self.y_scale.inverse(z @ self.coef + self.y_mean)


def calibrate(x: np.ndarray, y: np.ndarray, previous: _Member | None = None, shrinkage: str = "ridge",
              **options) -> _Member:
    """One LEAR fit on the rows of ``x`` (days x features) and ``y`` (days x n): rows with an unknown target dropped."""
    keep = ~np.isnan(y).any(axis=1)
    x, y = x[keep], y[keep]
    if x.shape[0] < MIN_DAYS:
        raise ValueError(f"{x.shape[0]} days with every price known: calibrating needs at least {MIN_DAYS}")
    x_scale = _Scaler.of(x)
    z = x_scale.forward(x)
    z[:, -7:] = x[:, -7:]  # day-of-week dummies stay 0/1
    z = np.where(np.isnan(z), 0.0, z)  # an unknown lag: the window's median
    x_mean = z.mean(axis=0)
    y_scale = _Scaler.of(y)
    w = y_scale.forward(y)
    y_mean = w.mean(axis=0)
    solver = SHRINKAGE[shrinkage]
    path = solver(z - x_mean, w - y_mean, previous.path if previous is not None else None, **options)
    return _Member(x_scale, x_mean, y_scale, y_mean, path.best, path)


def _windows(available_days: int, windows: tuple[int, ...]) -> tuple[int, ...]:
    """The days each window regresses on (its ``w`` days less the first week of lags), at most ``available_days``."""
    return tuple(sorted({min(w - PRICE_LAGS[-1], available_days) for w in windows}))


@dataclass(frozen=True)
class DayAheadModel:
    members: tuple[_Member, ...]
    metadata: dict

    @property
    def utc_offset_ms(self) -> int:
        return int(self.metadata["utc_offset_ms"])


def forecast_day(members, x_day: np.ndarray) -> np.ndarray:
    """The ensemble's forecast (n values) of a day from its input row."""
    return np.mean([m.predict(x_day[None, :])[0] for m in members], axis=0)


def _ensemble(x: np.ndarray, y: np.ndarray, target_day: int, windows: tuple[int, ...]) -> tuple[_Member, ...]:
    """Members calibrated on the days before ``target_day`` (from day 7 on: the lags need a week)."""
    first = min(PRICE_LAGS[-1], target_day)
    sizes = _windows(target_day - first, windows)
    return tuple(calibrate(x[target_day - w: target_day], y[target_day - w: target_day]) for w in sizes)


def fit(series: PriceSeries, *, utc_offset_ms: int, windows: tuple[int, ...] = WINDOWS_DAYS) -> DayAheadModel:
    """The ensemble calibrated on the whole series, and its holdout error quantiles."""
    grid = day_grid(series, utc_offset_ms)
    x, y = features(grid), grid.prices
    days = y.shape[0]
    if days < PRICE_LAGS[-1] + MIN_DAYS:
        raise ValueError(f"the prices cover {days} local days: training needs at least {PRICE_LAGS[-1] + MIN_DAYS} "
                         "(a week of lags, then two weeks to calibrate on)")
    holdout = min(HOLDOUT_DAYS, days - PRICE_LAGS[-1] - MIN_DAYS)
    errors = []
    if holdout > 0:
        members = _ensemble(x, y, days - holdout, windows)
        for day in range(days - holdout, days):
            errors.append(y[day] - forecast_day(members, x[day]))
    members = _ensemble(x, y, days, windows)
    residuals = np.concatenate(errors) if errors else np.zeros(1)
    residuals = residuals[~np.isnan(residuals)]
    metadata = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "interval_ms": grid.interval_ms,
        "utc_offset_ms": utc_offset_ms,
        "regressors": list(series.regressor_names),
        "windows_days": [int(w) + PRICE_LAGS[-1] for w in _windows(days - PRICE_LAGS[-1], windows)],
        "residual_quantiles": [float(q) for q in np.quantile(residuals, [0.1, 0.5, 0.9])] if residuals.size else
        [0.0, 0.0, 0.0],
        "holdout_days": holdout,
        "holdout_mae_usd_per_mwh": float(np.mean(np.abs(residuals))) if residuals.size else None,
        "trained_from": series.points[0].interval_start.isoformat(),
        "trained_to": series.points[-1].interval_start.isoformat(),
        "intervals": len(series.points),
    }
    return DayAheadModel(members, metadata)


def predict(model: DayAheadModel, series: PriceSeries) -> tuple[list[int], np.ndarray]:
    """``(interval starts in epoch ms, rows of (forecast, p10, p50, p90))`` from the file's last price to its day's end.

    A series that ends at a local midnight gets the whole next day. Regressors
    of the forecast day come from the series' trailing rows without a price;
    missing ones count as their calibration median.
    """
    if int(series.interval.total_seconds() * 1000) != model.metadata["interval_ms"]:
        raise ValueError(f"the model was trained on {model.metadata['interval_ms'] // 60000}-minute intervals, the "
                         f"prices are {series.interval}: train a model on this market's intervals")
    if list(series.regressor_names) != model.metadata["regressors"]:
        raise ValueError(f"the model was trained with regressors {model.metadata['regressors']}, the prices file has "
                         f"{list(series.regressor_names)}: give the same columns")
    grid = day_grid(series, model.utc_offset_ms, extra_days=1)
    last = epoch_ms(series.points[-1].interval_start) + model.metadata["interval_ms"] + model.utc_offset_ms
    day = int(last // _DAY_MS) - grid.first_day
    first_slot = int(last % _DAY_MS) // grid.interval_ms
    x = features(grid)
    point = forecast_day(model.members, x[day])[first_slot:]
    starts = [grid.start_ms(day, s) for s in range(first_slot, grid.per_day)]
    return starts, np.column_stack([point, *quantile_band(model, point)])


def quantile_band(model: DayAheadModel, point: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p10, p50, p90)`` of point forecasts: each plus the model's holdout error quantile (conformal)."""
    q10, q50, q90 = model.metadata["residual_quantiles"]
    return point + q10, point + q50, point + q90


def forecast_ahead(model: DayAheadModel, history_start_ms: int, prices: np.ndarray, regressors: np.ndarray,
                   origin_ms: int, count: int) -> np.ndarray:
    """Point forecasts of the ``count`` intervals from ``origin_ms`` (the model's interval), from ``prices``.

    ``prices`` are the intervals from ``history_start_ms`` (NaN unknown; none at or after the origin
    is read), ``regressors`` one row per interval from there to the end of the span (``len x k``,
    NaN unknown: their calibration medians), columns as ``metadata["regressors"]``. Each day's
    forecast uses the days before it; an unknown price of a day before (the intervals between the
    newest price and the origin, today when tomorrow is forecast) is that day's forecast. Raises
    ``ValueError`` when no price of the day before the origin's day is known.
    """
    interval_ms = int(model.metadata["interval_ms"])
    lead, off_grid = divmod(origin_ms - history_start_ms, interval_ms)
    if off_grid or lead < 0:
        raise ValueError("the origin is not an interval of the history's grid at or after its start")
    end = lead + count
    if regressors.shape != (end, len(model.metadata["regressors"])):
        raise ValueError(f"regressors must be {end} x {len(model.metadata['regressors'])}, got {regressors.shape}")
    known = np.full(end, np.nan)
    known[: min(prices.size, lead)] = prices[:lead]
    grid = _grid(history_start_ms + interval_ms * np.arange(end), known, regressors, interval_ms, model.utc_offset_ms)
    first = (origin_ms + model.utc_offset_ms) // _DAY_MS - grid.first_day
    if first < 1 or np.isnan(grid.prices[first - 1]).all():
        raise ValueError("no price of the day before the forecast's first day is known: the day-ahead model needs it")
    for day in range(first, grid.prices.shape[0]):
        unknown = np.isnan(grid.prices[day])
        grid.prices[day, unknown] = forecast_day(model.members, features(grid)[day])[unknown]
    flat = grid.prices.reshape(-1)
    offset = (origin_ms - grid.start_ms(0)) // interval_ms
    return flat[offset: offset + count].copy()


def save(model: DayAheadModel, directory: str | Path) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, m in enumerate(model.members):
        for name in ("x_mean", "y_mean", "coef"):
            arrays[f"{k}_{name}"] = getattr(m, name)
        for scaler in ("x_scale", "y_scale"):
            arrays[f"{k}_{scaler}_median"] = getattr(m, scaler).median
            arrays[f"{k}_{scaler}_mad"] = getattr(m, scaler).mad
    np.savez(path / "coefficients.npz", **arrays)
    (path / "metadata.json").write_text(json.dumps({**model.metadata, "members": len(model.members)}, indent=2) + "\n")
    return path


def load(directory: str | Path) -> DayAheadModel:
    path = Path(directory)
    metadata = json.loads((path / "metadata.json").read_text())
    if metadata.get("kind") != KIND or metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}/metadata.json is not a version {FORMAT_VERSION} day-ahead model: retrain with vpp train")
    with np.load(path / "coefficients.npz") as data:
        members = tuple(
            _Member(_Scaler(data[f"{k}_x_scale_median"], data[f"{k}_x_scale_mad"]), data[f"{k}_x_mean"],
                    _Scaler(data[f"{k}_y_scale_median"], data[f"{k}_y_scale_mad"]), data[f"{k}_y_mean"],
                    data[f"{k}_coef"])
            for k in range(int(metadata["members"])))
    return DayAheadModel(members, metadata)
