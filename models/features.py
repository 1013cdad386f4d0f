"""Features of the price forecaster: the target's calendar, a reference profile, and anomalies against it.

A forecast made at origin ``o`` (the start of the first interval to forecast)
for the interval ``h`` steps ahead (``h = 1..288``, target ``t = o + (h-1)``
intervals) may use only prices of intervals that start before ``o``. Every
feature here honours that by construction (all windows are cut at ``o``):

* calendar of the target (local slot of the day, weekend) and ``h`` itself:
  known in advance;
* ``reference``: the target's slot on the days of its kind (weekdays, or
  weekend days) among the last ``PROFILE_DAYS`` days, smoothed over +-30 min:
  the price the slot has when nothing unusual happens. A long window, because
  weather lasts for days: a few weeks hold only a handful of independent
  weather draws, and a short profile carries them along;
* anomalies, each a price minus the reference of its own interval: yesterday
  and the day before at the target's slot, averaged over +-2 h (a hot or
  overcast day shows over hours and lasts into the next day; jitter does
  not);
* the state at the origin: the anomaly of the last hour, as is and fading
  with ``h`` over 1 h and 4 h (the noise of one interval is strongly
  correlated with the next).

Tried and left out, because bench/forecast.py did worse with them over ten
seeds (the trees find noise in them: 113 days hold 113 draws of the
weather): day of week, the anomaly of the last 24 h and of each part of the
day, yesterday's slot +-30 min, raw lags, the last price.

``origin_inputs`` also returns the anomaly curves of the two days before the
origin by local slot; ``weather_basis`` learns, from a history's curves, the
few shapes that persist from one day to the next (the weather's), and
``project_days`` fits a curve on them. ``models.forecast`` starts from the
reference plus a linear fit of those fits and lets the trees learn the rest. Missing prices (gaps,
or a short history) are NaN, which XGBoost treats as missing; ``reference``
always has a value (it falls back to the profile of all days, yesterday, the
mean of the history, the last price). ``origin_features`` never reads an
index ``>= o``: the no-leakage test perturbs everything from ``o`` on and
expects the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "HORIZON",
    "INTERVAL_MS",
    "PROFILE_DAYS",
    "RECENT_DAYS",
    "epoch_ms",
    "from_epoch_ms",
    "origin_features",
    "origin_inputs",
    "project_days",
    "to_series",
    "weather_basis",
]

#: Intervals forecast from one origin: 24 h of 5-minute intervals.
HORIZON = 288
INTERVAL_MS = 300_000

FEATURE_NAMES = (
    "horizon",
    "slot_of_day",
    "weekend",
    "reference",
    "anomaly_1d_wide",
    "anomaly_2d_wide",
    "anomaly_last_1h",
    "anomaly_last_1h_decayed_1h",
    "anomaly_last_1h_decayed_4h",
)

#: Days the reference profile looks back over (16 weeks).
PROFILE_DAYS = 112
#: Days of anomaly curves before the origin that ``origin_inputs`` returns.
RECENT_DAYS = 2
_DAY = 288
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Half-widths (intervals) of the smoothing: the profile (+-30 min) and the anomalies (+-2 h):
# weather moves prices for hours, and a wider window averages more noise out.
_SMOOTH = 6
_WIDE = 24


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


def _ratio(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nan_mean(values: np.ndarray) -> float:
    if values.size == 0 or np.all(np.isnan(values)):
        return np.nan
    return float(np.nanmean(values))


class _Past:
    """A series known up to (not including) its end: window sums by cumulative sums, gaps skipped.

    The sums are kept three times: over every interval, over weekday intervals only and over
    weekend intervals only, so that a window around a Friday 23:50 of a weekday profile does not
    take in Saturday's first minutes.
    """

    def __init__(self, values: np.ndarray, start_ms: int, utc_offset_ms: int) -> None:
        self.end = values.size
        self.start_ms = start_ms
        self.utc_offset_ms = utc_offset_ms
        known = ~np.isnan(values)
        weekend = self.weekend(np.arange(values.size))
        self._sums = {}
        for kind, mask in ((None, known), (False, known & ~weekend), (True, known & weekend)):
            csum = np.concatenate([[0.0], np.cumsum(np.where(mask, values, 0.0))])
            self._sums[kind] = (csum, np.concatenate([[0], np.cumsum(mask)]))

    def weekend(self, index: np.ndarray) -> np.ndarray:
        local_day = (self.start_ms + index * INTERVAL_MS + self.utc_offset_ms) // _DAY_MS
        return (local_day + 3) % 7 >= 5  # 1970-01-01 was a Thursday

    def window(self, center: np.ndarray, half: int, kind=None) -> tuple[np.ndarray, np.ndarray]:
        """Sum and count of the known values within ``half`` intervals of ``center`` (of a kind: weekend or not)."""
        csum, ccount = self._sums[kind]
        # np.minimum/np.maximum rather than np.clip: the same indices, without clip's per-call overhead
        lo = np.minimum(np.maximum(center - half, 0), self.end)
        hi = np.minimum(np.maximum(center + half + 1, 0), self.end)
        return csum[hi] - csum[lo], ccount[hi] - ccount[lo]

    def mean(self, center: np.ndarray, half: int) -> np.ndarray:
        return _ratio(*self.window(center, half))

    def profile(self, index: np.ndarray, *, same_kind: bool) -> np.ndarray:
        """The slot of ``index`` over the ``PROFILE_DAYS`` days before it, smoothed; only days of its kind if asked."""
        total = np.zeros(index.shape)
        count = np.zeros(index.shape)
        kinds = (False, True) if same_kind else (None,)
        wanted = self.weekend(index)
        days_back = np.arange(1, PROFILE_DAYS + 1)[:, None] * _DAY
        for kind in kinds:
            rows = wanted == kind if same_kind else np.ones(index.shape, dtype=bool)
            # all the days at once (days x rows), added up day after day (an accumulate, never pairwise): the
            # very sums of a loop over the days
            window_sum, window_count = self.window(index[rows] - days_back, _SMOOTH, kind)
            total[rows] += np.cumsum(window_sum, axis=0)[-1]
            count[rows] += window_count.sum(axis=0)
        return _ratio(total, count)


def _first_finite(*columns: np.ndarray) -> np.ndarray:
    out = columns[0].copy()
    for column in columns[1:]:
        out = np.where(np.isnan(out), column, out)
    return out


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
    return origin_inputs(values, start_ms, origin_index, utc_offset_ms, horizon)[0]


def origin_inputs(
    values: np.ndarray,
    start_ms: int,
    origin_index: int,
    utc_offset_ms: int,
    horizon: int = HORIZON,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, recent_days)``: ``origin_features`` and the anomaly of the last two days by local slot.

    ``recent_days`` is ``RECENT_DAYS`` x 288: row 0 the anomalies of the 288
    intervals before the origin, row 1 of the 288 before those, each placed at
    its local slot of the day (so that for an origin at local midnight row 0
    is yesterday's anomaly curve), NaN where the price or its reference is
    missing. Like the rows, it reads only ``values[:origin_index]``.
    """
    if not 1 <= horizon <= _DAY:
        raise ValueError(f"horizon must be 1..{_DAY} intervals, got {horizon}")
    if origin_index < 1:
        raise ValueError("the forecast origin needs at least one earlier price")
    o = origin_index
    known = values[:o]
    past = _Past(known, start_ms, utc_offset_ms)
    h = np.arange(1, horizon + 1)
    target = o + h - 1
    local_ms = start_ms + target * INTERVAL_MS + utc_offset_ms
    slot = (local_ms % _DAY_MS) // INTERVAL_MS
    weekend = (local_ms // _DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday

    reference = _first_finite(
        past.profile(target, same_kind=True),
        past.profile(target, same_kind=False),
        past.mean(target - _DAY, _SMOOTH),
        np.full(horizon, _nan_mean(known)),
        np.full(horizon, known[-1]),
    )
    # The last two days and a margin, each interval minus its own reference (NaN without one).
    first = max(0, o - RECENT_DAYS * _DAY - _WIDE)
    recent = np.arange(first, o)
    anomaly = known[first:] - past.profile(recent, same_kind=True)
    anomalies = _Past(anomaly, start_ms + first * INTERVAL_MS, utc_offset_ms)
    last_hour = _nan_mean(anomaly[-12:])
    columns = [
        h.astype(float),
        slot.astype(float),
        weekend.astype(float),
        reference,
        anomalies.mean(target - _DAY - first, _WIDE),
        anomalies.mean(target - 2 * _DAY - first, _WIDE),
        np.full(horizon, last_hour),
        last_hour * np.exp(-(h - 1) / 12.0),
        last_hour * np.exp(-(h - 1) / 48.0),
    ]
    recent_days = np.full((RECENT_DAYS, _DAY), np.nan)
    for day in range(RECENT_DAYS):
        index = np.arange(o - (day + 1) * _DAY, o - day * _DAY)
        inside = index >= first
        day_slot = ((start_ms + index * INTERVAL_MS + utc_offset_ms) % _DAY_MS) // INTERVAL_MS
        recent_days[day, day_slot[inside]] = anomaly[index[inside] - first]
    return np.column_stack(columns), recent_days


def weather_basis(recent_days: np.ndarray, components: int = 3, smooth: int = _WIDE // 2) -> np.ndarray:
    """288 x ``components`` orthonormal curves that carry the day-to-day persistent part of the anomaly.

    ``recent_days`` is ``n x 2 x 288`` (``origin_inputs``' second output of
    ``n`` origins, NaN as 0): the eigenvectors of the largest eigenvalues of
    the symmetrized covariance between each day's anomaly curve and the day
    before's, after smoothing the curves over ``+-smooth`` intervals
    (circularly: they are slots of a day). Noise is independent from one day
    to the next and weather is not, so the lag covariance holds the weather's
    shapes (a hot day lifts the evening, a sunny one deepens the dip) without
    most of the noise that a plain covariance (PCA) keeps.
    """
    if recent_days.ndim != 3 or recent_days.shape[1:] != (RECENT_DAYS, _DAY):
        raise ValueError(f"recent_days must be n x {RECENT_DAYS} x {_DAY}, got {recent_days.shape}")
    curves = np.nan_to_num(recent_days[:, :2])
    if smooth:
        wrapped = np.concatenate([curves[..., -smooth:], curves, curves[..., :smooth]], axis=-1)
        csum = np.concatenate([np.zeros(curves.shape[:-1] + (1,)), np.cumsum(wrapped, axis=-1)], axis=-1)
        curves = (csum[..., 2 * smooth + 1 :] - csum[..., : -2 * smooth - 1]) / (2 * smooth + 1)
    today = curves[:, 0] - curves[:, 0].mean(axis=0)
    before = curves[:, 1] - curves[:, 1].mean(axis=0)
    lagged = today.T @ before
    eigenvalues, vectors = np.linalg.eigh(lagged + lagged.T)
    return vectors[:, np.argsort(-eigenvalues)[:components]]


def project_days(basis: np.ndarray, recent_days: np.ndarray) -> np.ndarray:
    """Each curve's least-squares fit on ``basis``, per basis curve: ``... x 288 x components``.

    Curves of ``recent_days`` (``... x 288``, NaN where unknown) are fitted on
    their known slots only; with fewer than two known slots per basis curve
    the fit is 0 (no evidence: no anomaly).
    """
    out = np.zeros(recent_days.shape + (basis.shape[1],))
    for index in np.ndindex(recent_days.shape[:-1]):
        curve = recent_days[index]
        known = ~np.isnan(curve)
        if known.sum() >= 2 * basis.shape[1]:
            scores = np.linalg.lstsq(basis[known], curve[known], rcond=None)[0]
            out[index] = basis * scores
    return out
