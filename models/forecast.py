"""Forecasts for the autobidder: the price of the next 288 intervals, and a node's available energy and power.

Price: one XGBoost model, direct multi-horizon. Each training row is a
(forecast origin, horizon step ``h``) pair with the features of
``models.features`` (calendar of the target, lags at least a day old, the
state at the origin, and ``h`` itself), so a forecast for step ``h`` uses only
prices known at the origin. The contract follows FlexMeasures' ``BaseModel``:

* ``fit(history, ...) -> PriceForecaster``;
* ``predict(model, origin, history) -> list[PricePoint]`` for the 288
  intervals from ``origin`` (history at or after ``origin`` is ignored);
* ``save(model, directory)`` writes ``booster.ubj`` (XGBoost's native UBJSON)
  and ``metadata.json``; ``load(directory)`` reads them back.

The default objective is ``reg:absoluteerror``: the forecast is judged by its
mean absolute error, and price spikes would drag a squared-error fit.

Availability: ``forecast_availability`` blends the last observed value of a
node's aggregate into the same time yesterday, with the weight of the last
value decaying as ``exp(-h / tau)`` (pure, no model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from models.features import (
    FEATURE_NAMES,
    HORIZON,
    INTERVAL_MS,
    epoch_ms,
    from_epoch_ms,
    origin_features,
    to_series,
)
from models.optimize import PricePoint

__all__ = [
    "DEFAULT_PARAMS",
    "FORMAT_VERSION",
    "AggregateSample",
    "AvailabilityPoint",
    "PriceForecaster",
    "fit",
    "forecast_availability",
    "load",
    "predict",
    "save",
]

FORMAT_VERSION = 1
#: XGBoost parameters of ``fit``: shallow, strongly regularized trees (113 days hold only
#: 113 draws of the day's weather), 2 threads.
DEFAULT_PARAMS = {
    "objective": "reg:absoluteerror",
    "tree_method": "hist",
    "max_depth": 4,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.7,
    "min_child_weight": 200,
    "nthread": 2,
}
DEFAULT_ROUNDS = 400
# A training origin every 36 intervals (3 h) gives 8 x 288 rows a day of history; hourly origins
# triple the rows (and the fit time) for no gain on bench/forecast.py.
DEFAULT_ORIGIN_STEP = 36


@dataclass(frozen=True)
class PriceForecaster:
    """A trained price model: the booster and what it needs to build features again."""

    booster: object  # xgboost.Booster
    utc_offset_ms: int
    metadata: dict = field(default_factory=dict)


def _training_rows(values: np.ndarray, start_ms: int, utc_offset_ms: int, origin_step: int):
    features, targets = [], []
    for origin in range(HORIZON, values.size, origin_step):
        rows = origin_features(values, start_ms, origin, utc_offset_ms)
        target = np.full(HORIZON, np.nan)
        available = values[origin : origin + HORIZON]
        target[: available.size] = available
        keep = ~np.isnan(target)
        features.append(rows[keep])
        targets.append(target[keep])
    if not features:
        raise ValueError(f"need more than {HORIZON} intervals (a day) of price history to train, got {values.size}")
    return np.concatenate(features), np.concatenate(targets)


def fit(
    history: Sequence[PricePoint],
    *,
    utc_offset_h: float = 0.0,
    rounds: int = DEFAULT_ROUNDS,
    origin_step: int = DEFAULT_ORIGIN_STEP,
    params: dict | None = None,
    seed: int = 0,
) -> PriceForecaster:
    """Train on ``history`` (5-minute ``PricePoint``s, gaps allowed; at least a day and one interval).

    ``utc_offset_h`` is the pricing node's local standard time, for the
    calendar features (time of day, day of week); store it with the model.
    """
    import xgboost as xgb

    offset_ms = round(utc_offset_h * 3_600_000)
    start_ms, values = to_series(history)
    x, y = _training_rows(values, start_ms, offset_ms, origin_step)
    merged = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    data = xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES))
    booster = xgb.train(merged, data, num_boost_round=rounds)
    train_mae = float(np.mean(np.abs(booster.predict(data) - y)))
    metadata = {
        "format_version": FORMAT_VERSION,
        "kind": "price_forecaster",
        "horizon_intervals": HORIZON,
        "interval_ms": INTERVAL_MS,
        "utc_offset_ms": offset_ms,
        "feature_names": list(FEATURE_NAMES),
        "params": merged,
        "rounds": rounds,
        "origin_step_intervals": origin_step,
        "trained_from": from_epoch_ms(start_ms).isoformat(),
        "trained_to": from_epoch_ms(start_ms + (values.size - 1) * INTERVAL_MS).isoformat(),
        "training_rows": int(y.size),
        "training_mae_usd_per_mwh": train_mae,
        "xgboost_version": xgb.__version__,
    }
    return PriceForecaster(booster=booster, utc_offset_ms=offset_ms, metadata=metadata)


def predict(model: PriceForecaster, origin: datetime, history: Sequence[PricePoint]) -> list[PricePoint]:
    """Prices of the 288 intervals from ``origin`` (the start of the first one), from history before it.

    History at or after ``origin`` is ignored; a gap in the history is a
    missing value, so the forecast degrades rather than fails. Raises
    ``ValueError`` when there is no price before ``origin`` or ``origin`` is
    off the 5-minute grid.
    """
    import xgboost as xgb

    origin_ms = epoch_ms(origin)
    if origin_ms % INTERVAL_MS:
        raise ValueError(f"origin {origin.isoformat()} is not on a 5-minute boundary")
    start_ms, values = to_series(history, before_ms=origin_ms)
    origin_index = (origin_ms - start_ms) // INTERVAL_MS
    # Pad the series up to the origin with missing values (history may stop before it).
    padded = np.concatenate([values, np.full(origin_index - values.size, np.nan)])
    rows = origin_features(padded, start_ms, origin_index, model.utc_offset_ms)
    forecast = model.booster.predict(xgb.DMatrix(rows, feature_names=list(FEATURE_NAMES)))
    return [PricePoint(from_epoch_ms(origin_ms + k * INTERVAL_MS), float(v)) for k, v in enumerate(forecast)]


def save(model: PriceForecaster, directory: str | Path) -> Path:
    """Write ``booster.ubj`` and ``metadata.json`` into ``directory`` (created if needed)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(path / "booster.ubj"))
    (path / "metadata.json").write_text(json.dumps(model.metadata, indent=2, sort_keys=True) + "\n")
    return path


def load(directory: str | Path) -> PriceForecaster:
    """The model ``save`` wrote; ``ValueError`` when the directory does not hold one this version reads."""
    import xgboost as xgb

    path = Path(directory)
    try:
        metadata = json.loads((path / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} does not hold a price model (metadata.json: {exc})") from exc
    if metadata.get("kind") != "price_forecaster" or metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}/metadata.json is not a version {FORMAT_VERSION} price model: retrain with vpp train")
    if metadata.get("feature_names") != list(FEATURE_NAMES):
        raise ValueError(f"{path} was trained with other features: retrain with vpp train")
    booster = xgb.Booster()
    booster.load_model(str(path / "booster.ubj"))
    return PriceForecaster(booster=booster, utc_offset_ms=int(metadata["utc_offset_ms"]), metadata=metadata)


# -- availability of a node ------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateSample:
    """What the forecast reads of one ``fleet.aggregates`` record of a node."""

    window_start_ms: int
    energy_available_wh: float
    headroom_wh: float
    discharge_available_w: float
    charge_available_w: float


@dataclass(frozen=True)
class AvailabilityPoint:
    """Forecast availability of a node over one 5-minute interval (means over the interval)."""

    interval_start_ms: int
    energy_available_wh: float
    headroom_wh: float
    discharge_available_w: float
    charge_available_w: float


_AVAILABILITY_FIELDS = ("energy_available_wh", "headroom_wh", "discharge_available_w", "charge_available_w")


def _interval_means(samples: Sequence[AggregateSample], before_ms: int) -> dict[int, np.ndarray]:
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for s in samples:
        if s.window_start_ms >= before_ms:
            continue
        key = s.window_start_ms - s.window_start_ms % INTERVAL_MS
        row = np.array([getattr(s, name) for name in _AVAILABILITY_FIELDS], dtype=float)
        if not np.all(np.isfinite(row)):
            continue
        sums[key] = sums.get(key, 0.0) + row
        counts[key] = counts.get(key, 0) + 1
    return {key: total / counts[key] for key, total in sums.items()}


def forecast_availability(
    samples: Sequence[AggregateSample],
    origin_ms: int,
    *,
    horizon: int = HORIZON,
    tau_intervals: float = 12.0,
) -> list[AvailabilityPoint]:
    """A node's availability for ``horizon`` intervals from ``origin_ms``, from its aggregates before it.

    Aggregates (any window length) are averaged per 5-minute interval. Step
    ``h`` (1-based) is ``w last + (1 - w) yesterday`` with ``w = exp(-(h-1) /
    tau_intervals)``, ``last`` the latest interval's mean and ``yesterday``
    the same interval a day earlier; without a value a day earlier it is
    ``last``. Samples at or after the origin are ignored. Raises
    ``ValueError`` when there is no usable sample before the origin.
    """
    if origin_ms % INTERVAL_MS:
        raise ValueError(f"origin {origin_ms} ms is not on a 5-minute boundary")
    means = _interval_means(samples, origin_ms)
    if not means:
        raise ValueError("no aggregate of the node before the forecast origin: cannot forecast its availability")
    last = means[max(means)]
    out = []
    for k in range(horizon):
        start = origin_ms + k * INTERVAL_MS
        weight = math.exp(-k / tau_intervals)
        yesterday = means.get(start - 288 * INTERVAL_MS)
        value = last if yesterday is None else weight * last + (1 - weight) * yesterday
        out.append(AvailabilityPoint(start, *(max(0.0, float(v)) for v in value)))
    return out
