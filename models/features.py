"""Features of the price forecaster: calendar of the target interval, lags and the state at the forecast origin.

A forecast made at origin ``o`` (the start of the first interval to forecast)
for the interval ``h`` steps ahead (``h = 1..288``, target ``t = o + (h-1)``
intervals) may use only prices of intervals that start before ``o``. Every
feature here honours that by construction:

* calendar of the target (local slot of the day, day of week, weekend) and
  ``h`` itself: known in advance;
* same slot 1, 2 and 7 days before the target (``t - 288 k``): at most
  ``o - 1`` because ``h <= 288``; the 7-day mean of the same slot likewise;
* the same slot smoothed over +-6 intervals, yesterday and on average over
  the last 7 days, windows cut at ``o``, and yesterday's anomaly (the one
  minus the other): weather lasts for days, jitter does not;
* the state at the origin: the last price, the mean of the last hour and of
  the last day and week, and the last price minus the same slot a day before;
* day-part anomalies: the mean of the last 24 h in a part of the local day
  (night, morning ramp, solar dip, evening peak) minus its mean over the
  last 7 days; a hot or overcast day shows in one part, over hours, so a
  mean over the part separates it from the noise.

Missing prices (gaps, or history shorter than a week) are NaN, which XGBoost
treats as missing. ``origin_features`` never reads an index ``>= o``: the
no-leakage test perturbs everything from ``o`` on and expects the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "HORIZON",
    "INTERVAL_MS",
    "epoch_ms",
    "from_epoch_ms",
    "origin_features",
    "to_series",
]

#: Intervals forecast from one origin: 24 h of 5-minute intervals.
HORIZON = 288
INTERVAL_MS = 300_000
_DAY = 288
_WEEK = 7 * _DAY
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMOOTH = 6

FEATURE_NAMES = (
    "horizon",
    "slot_of_day",
    "day_of_week",
    "weekend",
    "same_slot_1d",
    "same_slot_2d",
    "same_slot_7d",
    "same_slot_mean_7d",
    "same_slot_1d_smoothed",
    "same_slot_mean_7d_smoothed",
    "anomaly_1d",
    "last",
    "mean_last_1h",
    "mean_last_1d",
    "mean_last_7d",
    "last_minus_same_slot_1d",
    "mean_last_1d_minus_7d",
    "night_anomaly_1d",
    "morning_anomaly_1d",
    "midday_anomaly_1d",
    "evening_anomaly_1d",
)

# Local hours of the day-part anomalies (slots of 5 minutes): night, morning ramp, solar dip, evening peak.
_DAY_PARTS = ((0, 72), (72, 108), (120, 180), (204, 252))


def epoch_ms(when: datetime) -> int:
    """Epoch milliseconds of a timezone-aware datetime, exactly."""
    if when.tzinfo is None:
        raise ValueError(f"{when.isoformat()} has no UTC offset: give timezone-aware timestamps")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def to_series(points: Sequence, before_ms: int | None = None) -> tuple[int, np.ndarray]:
    """``(start_ms, prices)``: the points (``PricePoint``s) on a 5-minute grid, gaps as NaN.

    Points at or after ``before_ms`` are left out. Raises ``ValueError`` for a
    timestamp off the 5-minute grid, a duplicate, or no point at all.
    """
    stamps = [epoch_ms(p.interval_start) for p in points]
    kept = [(ms, float(p.price_usd_per_mwh)) for ms, p in zip(stamps, points) if before_ms is None or ms < before_ms]
    if not kept:
        raise ValueError("no price history before the forecast origin")
    for ms, _ in kept:
        if ms % INTERVAL_MS:
            raise ValueError(f"interval_start {from_epoch_ms(ms).isoformat()} is not on a 5-minute boundary")
    start_ms = min(ms for ms, _ in kept)
    end_ms = max(ms for ms, _ in kept)
    values = np.full((end_ms - start_ms) // INTERVAL_MS + 1, np.nan)
    seen = np.zeros(values.size, dtype=bool)
    for ms, price in kept:
        k = (ms - start_ms) // INTERVAL_MS
        if seen[k]:
            raise ValueError(f"two prices for the interval starting {from_epoch_ms(ms).isoformat()}")
        seen[k] = True
        values[k] = price
    return start_ms, values


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]``, NaN where the index falls before the series."""
    out = np.full(index.shape, np.nan)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


def _nanmean(rows: np.ndarray, axis: int) -> np.ndarray:
    count = np.sum(~np.isnan(rows), axis=axis)
    total = np.nansum(rows, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _window_mean(values: np.ndarray, lo: int, hi: int) -> float:
    """Mean of ``values[lo:hi]`` ignoring NaN (NaN when empty or all missing)."""
    chunk = values[max(lo, 0) : max(hi, 0)]
    if chunk.size == 0 or np.all(np.isnan(chunk)):
        return np.nan
    return float(np.nanmean(chunk))


def _day_part_anomalies(known: np.ndarray, start_ms: int, utc_offset_ms: int) -> list[float]:
    o = known.size
    week = known[max(0, o - _WEEK) :]
    first = o - week.size
    slots = ((start_ms + utc_offset_ms) // INTERVAL_MS + first + np.arange(week.size)) % _DAY
    last_day = np.arange(week.size) >= week.size - _DAY
    out = []
    for lo, hi in _DAY_PARTS:
        part = (slots >= lo) & (slots < hi)
        out.append(_nan_difference(week[part & last_day], week[part]))
    return out


def _nan_difference(recent: np.ndarray, reference: np.ndarray) -> float:
    if np.all(np.isnan(recent)) or np.all(np.isnan(reference)):
        return np.nan
    return float(np.nanmean(recent) - np.nanmean(reference))


def origin_features(
    values: np.ndarray,
    start_ms: int,
    origin_index: int,
    utc_offset_ms: int,
    horizon: int = HORIZON,
) -> np.ndarray:
    """Feature rows (``horizon`` x ``len(FEATURE_NAMES)``) for targets ``origin_index .. + horizon - 1``.

    ``values[k]`` is the price of the interval starting ``start_ms + k * 5 min``;
    only ``values[:origin_index]`` is read (see the module docstring).
    """
    if not 1 <= horizon <= _DAY:
        raise ValueError(f"horizon must be 1..{_DAY} intervals, got {horizon}")
    if origin_index < 1:
        raise ValueError("the forecast origin needs at least one earlier price")
    o = origin_index
    known = values[:o]
    h = np.arange(1, horizon + 1)
    target = o + h - 1
    local_ms = start_ms + target * INTERVAL_MS + utc_offset_ms
    slot = (local_ms % _DAY_MS) // INTERVAL_MS
    day_of_week = (local_ms // _DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0

    lag_1d = _at(known, target - _DAY)
    same_slot = np.stack([_at(known, target - k * _DAY) for k in range(1, 8)])
    # The slot +-6 intervals k days back, windows cut at the origin: cumulative sums over known values.
    filled = np.where(np.isnan(known), 0.0, known)
    csum = np.concatenate([[0.0], np.cumsum(filled)])
    ccount = np.concatenate([[0], np.cumsum(~np.isnan(known))])
    sums = np.zeros(horizon)
    counts = np.zeros(horizon)
    smoothed = np.full(horizon, np.nan)
    for k in range(1, 8):
        lo = np.clip(target - k * _DAY - _SMOOTH, 0, o)
        hi = np.clip(target - k * _DAY + _SMOOTH + 1, 0, o)
        window_sum, window_count = csum[hi] - csum[lo], ccount[hi] - ccount[lo]
        if k == 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                smoothed = np.where(window_count > 0, window_sum / np.maximum(window_count, 1), np.nan)
        sums += window_sum
        counts += window_count
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed_7d = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    last = known[-1]
    last_minus_1d = last - known[o - 1 - _DAY] if o - 1 - _DAY >= 0 else np.nan
    state = (
        last,
        _window_mean(known, o - 12, o),
        _window_mean(known, o - _DAY, o),
        _window_mean(known, o - _WEEK, o),
        last_minus_1d,
    )
    state = (*state, state[2] - state[3], *_day_part_anomalies(known, start_ms, utc_offset_ms))
    columns = [
        h.astype(float),
        slot.astype(float),
        day_of_week.astype(float),
        (day_of_week >= 5).astype(float),
        lag_1d,
        _at(known, target - 2 * _DAY),
        _at(known, target - 7 * _DAY),
        _nanmean(same_slot, axis=0),
        smoothed,
        smoothed_7d,
        smoothed - smoothed_7d,
        *(np.full(horizon, value) for value in state),
    ]
    return np.column_stack(columns)
