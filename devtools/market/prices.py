"""Synthetic real-time prices ($/MWh) at one pricing node: pure and deterministic under a seed.

The generator draws 5-minute prices; a market of longer intervals (15, 30
minutes, an hour: any multiple of 5 minutes that divides a day) prices each
interval at the mean of its 5-minute prices, rounded to the cent, as a
settlement interval averages its dispatch intervals. The price of every
interval is a function of ``(seed, interval_start, interval, model)`` alone,
whatever range it is asked in: a history written today and the prices the
market publishes tomorrow are one series. The shape follows a solar-heavy
western US node, in the node's local standard time (``utc_offset_h``, no
daylight saving):

* a daily shape: a night trough, a morning ramp, a midday solar dip that goes
  below zero on sunny days, and an evening peak when solar fades;
* a weekly shape: weekend levels and peaks lower, so the dip goes deeper;
* weather: three daily factors (heat, sun, wind), each a daily AR(1) with
  ``weather_phi_per_day``, that move the evening peak, the depth of the dip
  and the level for days at a time;
* noise: an AR(1) per 5 minutes plus heavy-tailed interval-to-interval
  jitter (Student t, 4 degrees of freedom: real 5-minute prices jump from one
  interval to the next), both larger in a "volatile" regime, entered and left
  by a two-state Markov chain;
* rare spikes (``spikes_per_day``, mostly in the evening), a few intervals
  each, hundreds of $/MWh;
* prices clipped to the market's floor and cap.

How the series stays a function of the interval alone: every random draw
comes from a generator seeded by ``(seed, local day, stream)``, and the AR(1)
noise of a day is filtered over that day and the one before it (what is left
of older innovations after 288 steps is ``phi**288``, 1.5e-4 at 0.97), the
weather factors over the last 30 days likewise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np

__all__ = [
    "DAY_MS",
    "INTERVAL_MS",
    "check_interval_ms",
    "INTERVALS_PER_DAY",
    "PriceModel",
    "expected_day_shape",
    "generate_prices",
    "local_day_and_slot",
    "price_series",
]

#: The generator's own interval (and the market's default): 5 minutes.
INTERVAL_MS = 300_000
INTERVALS_PER_DAY = 288
DAY_MS = 86_400_000

# Random streams of one day (the third element of the seed sequence).
_NOISE, _REGIME, _SPIKES, _WEATHER, _JITTER = 0, 1, 2, 3, 4
_WEATHER_DAYS = 30
# SeedSequence takes non-negative integers; days before 1970 are shifted up.
_DAY_OFFSET = 1_000_000


@dataclass(frozen=True)
class PriceModel:
    """Parameters of the generator (defaults: a sunny western node in spring)."""

    utc_offset_h: float = -8.0
    base_usd_per_mwh: float = 40.0
    night_discount_usd_per_mwh: float = 10.0
    morning_peak_usd_per_mwh: float = 15.0
    evening_peak_usd_per_mwh: float = 55.0
    solar_dip_usd_per_mwh: float = 42.0
    weekend_factor: float = 0.85
    heat_effect: float = 0.35  # evening peak x (1 + heat_effect * heat)
    sun_effect: float = 0.35  # solar dip x (1 + sun_effect * sun)
    wind_usd_per_mwh: float = 7.0  # level - wind_usd_per_mwh * wind
    weather_phi_per_day: float = 0.7
    noise_sd_usd_per_mwh: float = 6.0
    noise_phi: float = 0.97
    jitter_sd_usd_per_mwh: float = 7.0
    volatile_noise_factor: float = 2.5
    volatile_enter_per_interval: float = 1 / 500
    volatile_exit_per_interval: float = 1 / 30
    spikes_per_day: float = 0.2
    spike_median_usd_per_mwh: float = 250.0
    floor_usd_per_mwh: float = -150.0
    cap_usd_per_mwh: float = 2000.0

    def __post_init__(self) -> None:
        offset_ms = self.utc_offset_h * 3_600_000
        if offset_ms % INTERVAL_MS or not -14 <= self.utc_offset_h <= 14:
            raise ValueError(f"utc_offset_h must be a whole number of 5 minutes within +-14 h, got {self.utc_offset_h!r}")
        if not 0 <= self.noise_phi < 1 or not 0 <= self.weather_phi_per_day < 1:
            raise ValueError("noise_phi and weather_phi_per_day must lie in [0, 1)")
        if self.floor_usd_per_mwh >= self.cap_usd_per_mwh:
            raise ValueError("floor_usd_per_mwh must lie below cap_usd_per_mwh")

    @property
    def utc_offset_ms(self) -> int:
        return int(self.utc_offset_h * 3_600_000)


def local_day_and_slot(interval_start_ms: int, utc_offset_ms: int) -> tuple[int, int]:
    """Local day number (days since 1970-01-01 local) and the 5-minute slot 0..287 of an interval."""
    local_ms = interval_start_ms + utc_offset_ms
    return local_ms // DAY_MS, (local_ms % DAY_MS) // INTERVAL_MS


def _rng(seed: int, day: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, day + _DAY_OFFSET, stream])


@lru_cache(maxsize=4096)
def _weather_draw(seed: int, day: int) -> tuple[float, float, float]:
    z = _rng(seed, day, _WEATHER).standard_normal(3)
    return float(z[0]), float(z[1]), float(z[2])


def _weather(seed: int, day: int, phi: float) -> np.ndarray:
    """(heat, sun, wind) of a day, each stationary N(0, 1) with day-to-day correlation ``phi``."""
    total = np.zeros(3)
    for k in range(_WEATHER_DAYS):
        total += phi**k * np.asarray(_weather_draw(seed, day - k))
    return total * math.sqrt(1 - phi * phi)


_HOURS = (np.arange(INTERVALS_PER_DAY) + 0.5) / 12.0  # local hour at each slot's middle


def _bump(center_h: float, width_h: float) -> np.ndarray:
    return np.exp(-0.5 * ((_HOURS - center_h) / width_h) ** 2)


_NIGHT = _bump(3.0, 2.2)
_MORNING = _bump(7.5, 1.2)
_EVENING = _bump(19.0, 1.6) + _bump(19.0 - 24.0, 1.6)
_SOLAR = np.clip(np.sin(np.pi * (_HOURS - 6.5) / 12.5), 0.0, None) ** 1.5


@lru_cache(maxsize=1024)
def _regime_scale(seed: int, day: int, model: PriceModel) -> np.ndarray:
    """Noise scale per slot: 1 in the calm regime, ``volatile_noise_factor`` in the volatile one."""
    enter, leave = model.volatile_enter_per_interval, model.volatile_exit_per_interval
    u = _rng(seed, day, _REGIME).random(INTERVALS_PER_DAY + 1)
    volatile = u[0] < enter / (enter + leave)  # start from the stationary distribution
    scale = np.ones(INTERVALS_PER_DAY)
    for k in range(INTERVALS_PER_DAY):
        volatile = (u[k + 1] >= leave) if volatile else (u[k + 1] < enter)
        if volatile:
            scale[k] = model.volatile_noise_factor
    scale.flags.writeable = False
    return scale


@lru_cache(maxsize=1024)
def _innovations(seed: int, day: int, model: PriceModel) -> np.ndarray:
    sd = model.noise_sd_usd_per_mwh * math.sqrt(1 - model.noise_phi**2)
    e = _rng(seed, day, _NOISE).standard_normal(INTERVALS_PER_DAY) * sd * _regime_scale(seed, day, model)
    e.flags.writeable = False
    return e


def _noise(seed: int, day: int, model: PriceModel) -> np.ndarray:
    e = np.concatenate([_innovations(seed, day - 1, model), _innovations(seed, day, model)])
    x = np.empty_like(e)
    level, phi = 0.0, model.noise_phi
    for k, value in enumerate(e):
        level = phi * level + value
        x[k] = level
    # Student t with 4 degrees of freedom has variance 2: scaled to the jitter's standard deviation.
    jitter = _rng(seed, day, _JITTER).standard_t(4, INTERVALS_PER_DAY) * model.jitter_sd_usd_per_mwh / math.sqrt(2)
    return x[INTERVALS_PER_DAY:] + jitter * _regime_scale(seed, day, model)


def _spikes(seed: int, day: int, model: PriceModel) -> np.ndarray:
    rng = _rng(seed, day, _SPIKES)
    out = np.zeros(INTERVALS_PER_DAY)
    weight = 0.2 + _EVENING + 0.5 * _MORNING
    weight = weight / weight.sum()
    for _ in range(int(rng.poisson(model.spikes_per_day))):
        start = int(rng.choice(INTERVALS_PER_DAY, p=weight))
        length = int(rng.integers(1, 5))
        height = model.spike_median_usd_per_mwh * math.exp(0.6 * rng.standard_normal())
        out[start : start + length] += height
    return out


def _shape(day: int, weather: np.ndarray, model: PriceModel) -> np.ndarray:
    """The day's price shape for given weather factors, before noise and spikes."""
    heat, sun, wind = (float(w) for w in weather)
    weekend = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    week = model.weekend_factor if weekend else 1.0
    level = week * model.base_usd_per_mwh + 6.0 * heat - model.wind_usd_per_mwh * wind
    return (
        level
        - (model.night_discount_usd_per_mwh + 3.0 * max(wind, 0.0)) * _NIGHT
        + week * model.morning_peak_usd_per_mwh * _MORNING
        + week * model.evening_peak_usd_per_mwh * max(0.3, 1 + model.heat_effect * heat) * _EVENING
        - model.solar_dip_usd_per_mwh * float(np.clip(1 + model.sun_effect * sun, 0.2, 1.8)) * _SOLAR
    )


@lru_cache(maxsize=512)
def _day_prices(seed: int, day: int, model: PriceModel) -> np.ndarray:
    weather = _weather(seed, day, model.weather_phi_per_day)
    prices = _shape(day, weather, model) + _noise(seed, day, model) + _spikes(seed, day, model)
    prices = np.clip(prices, model.floor_usd_per_mwh, model.cap_usd_per_mwh).round(2)
    prices.flags.writeable = False
    return prices


def expected_day_shape(day_start_ms: int, *, seed: int = 0, model: PriceModel = PriceModel()) -> np.ndarray:
    """A benchmark's oracle: the 288-interval shape of the local day starting at ``day_start_ms``.

    The generator's own formula with the weather factors expected from the
    days before (the day's own weather draw left out), no noise and no
    spikes: close to the best forecast anyone without that day's weather can
    make. Not for forecasting: a real market has no such formula.
    """
    day, slot = local_day_and_slot(day_start_ms, model.utc_offset_ms)
    if slot or day_start_ms % INTERVAL_MS:
        raise ValueError(f"{day_start_ms} ms is not a local midnight of the node")
    phi = model.weather_phi_per_day
    expected = _weather(seed, day, phi) - math.sqrt(1 - phi * phi) * np.asarray(_weather_draw(seed, day))
    return _shape(day, expected, model)


def check_interval_ms(interval_ms: int) -> int:
    """``interval_ms`` when the generator can price it (a multiple of 5 minutes dividing a day), else ``ValueError``."""
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms <= 0 \
            or interval_ms % INTERVAL_MS or DAY_MS % interval_ms:
        raise ValueError(f"a market interval of {interval_ms!r} ms cannot be simulated: give a multiple of 5 minutes "
                         "that divides a day (5, 10, 15, 30 minutes, 1 hour, ...)")
    return interval_ms


def _five_minute_series(start_ms: int, count: int, seed: int, model: PriceModel) -> np.ndarray:
    out = np.empty(count)
    day, slot = local_day_and_slot(start_ms, model.utc_offset_ms)
    filled = 0
    while filled < count:
        take = min(INTERVALS_PER_DAY - slot, count - filled)
        out[filled : filled + take] = _day_prices(seed, day, model)[slot : slot + take]
        filled += take
        day, slot = day + 1, 0
    return out


def price_series(start_ms: int, count: int, *, seed: int = 0, model: PriceModel = PriceModel(),
                 interval_ms: int = INTERVAL_MS) -> np.ndarray:
    """Prices of ``count`` consecutive intervals of ``interval_ms`` from ``start_ms`` (epoch ms, on that grid).

    An interval longer than 5 minutes is priced at the mean of its 5-minute prices (rounded to the cent).
    """
    check_interval_ms(interval_ms)
    if start_ms % interval_ms:
        minutes = f"{interval_ms // 60_000}-minute"
        raise ValueError(f"start {start_ms} ms is not on a {minutes} boundary")
    if count < 0:
        raise ValueError(f"count must be zero or positive, got {count}")
    per = interval_ms // INTERVAL_MS
    values = _five_minute_series(start_ms, count * per, seed, model)
    return values if per == 1 else values.reshape(count, per).mean(axis=1).round(2)


def generate_prices(start: datetime, count: int, *, seed: int = 0, model: PriceModel = PriceModel(),
                    interval: timedelta = timedelta(minutes=5)):
    """``count`` ``PricePoint``s of ``interval`` from ``start`` (timezone-aware, on that grid), in UTC."""
    from models.optimize import PricePoint

    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    start = start.astimezone(UTC)
    start_ms = int(start.timestamp() * 1000)
    values = price_series(start_ms, count, seed=seed, model=model, interval_ms=interval // timedelta(milliseconds=1))
    return [PricePoint(start + k * interval, float(v)) for k, v in enumerate(values)]
