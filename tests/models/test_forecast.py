"""The price forecaster (no leakage, save/load round trip) and the availability forecast."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models import forecast
from models.features import FEATURE_NAMES, origin_features, to_series
from models.forecast import AggregateSample, forecast_availability
from models.optimize import PricePoint
from vpp.market.prices import generate_prices

START = datetime(2026, 3, 1, 8, tzinfo=UTC)
STEP = timedelta(minutes=5)
DAYS = 12


@pytest.fixture(scope="module")
def history() -> list[PricePoint]:
    return generate_prices(START, DAYS * 288, seed=11)


@pytest.fixture(scope="module")
def model(history):
    return forecast.fit(history[: 10 * 288], utc_offset_h=-8, rounds=30)


def perturbed_from(points: list[PricePoint], index: int) -> list[PricePoint]:
    rng = np.random.default_rng(0)
    return points[:index] + [replace(p, price_usd_per_mwh=p.price_usd_per_mwh * 10 + rng.normal(0, 500)) for p in points[index:]]


def test_features_read_nothing_from_the_origin_on(history):
    start_ms, values = to_series(history)
    origin = 9 * 288 + 77
    changed = values.copy()
    changed[origin:] = np.random.default_rng(1).normal(0, 1000, changed.size - origin)
    rows = origin_features(values, start_ms, origin, -8 * 3_600_000)
    assert rows.shape == (288, len(FEATURE_NAMES))
    assert np.array_equal(rows, origin_features(changed, start_ms, origin, -8 * 3_600_000), equal_nan=True)


@pytest.mark.parametrize("origin_index", [10 * 288, 10 * 288 + 131, 11 * 288 + 5])
def test_perturbing_the_future_does_not_change_a_forecast(model, history, origin_index):
    origin = history[origin_index].interval_start
    plain = forecast.predict(model, origin, history[:origin_index])
    with_future = forecast.predict(model, origin, history)
    with_other_future = forecast.predict(model, origin, perturbed_from(history, origin_index))
    assert plain == with_future == with_other_future
    assert [p.interval_start for p in plain] == [origin + k * STEP for k in range(288)]


def test_perturbing_the_past_does_change_it(model, history):
    origin_index = 11 * 288
    origin = history[origin_index].interval_start
    assert forecast.predict(model, origin, history) != forecast.predict(model, origin, perturbed_from(history, origin_index - 12))


def test_save_and_load_give_the_same_forecasts(model, history, tmp_path):
    path = forecast.save(model, tmp_path / "price-model")
    assert sorted(p.name for p in path.iterdir()) == ["booster.ubj", "metadata.json"]
    loaded = forecast.load(path)
    origin = history[11 * 288].interval_start
    assert forecast.predict(loaded, origin, history) == forecast.predict(model, origin, history)
    assert loaded.metadata == model.metadata


def test_load_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="does not hold a price model"):
        forecast.load(tmp_path)
    (tmp_path / "metadata.json").write_text('{"kind": "price_forecaster", "format_version": 99}')
    with pytest.raises(ValueError, match="retrain"):
        forecast.load(tmp_path)


def test_a_gap_in_history_degrades_the_forecast_without_failing(model, history):
    origin_index = 11 * 288
    holed = history[: origin_index - 500] + history[origin_index - 300 : origin_index - 36]
    points = forecast.predict(model, history[origin_index].interval_start, holed)
    assert len(points) == 288 and all(np.isfinite(p.price_usd_per_mwh) for p in points)


def test_training_needs_more_than_a_day_and_predicting_a_past():
    with pytest.raises(ValueError, match="a day"):
        forecast.fit(generate_prices(START, 288, seed=1), rounds=2)
    model = forecast.fit(generate_prices(START, 2 * 288, seed=1), rounds=2)
    with pytest.raises(ValueError, match="before the forecast origin"):
        forecast.predict(model, START, generate_prices(START, 10, seed=1))
    with pytest.raises(ValueError, match="5-minute"):
        forecast.predict(model, START + timedelta(minutes=1), generate_prices(START - STEP * 10, 10, seed=1))


# -- availability -------------------------------------------------------------------------------

O = 1_780_000_200_000  # a 5-minute boundary
I = 300_000


def sample(ms: int, energy: float, power: float = 1000.0) -> AggregateSample:
    return AggregateSample(ms, energy, 2 * energy, power, power / 2)


AVAILABILITY = [
    pytest.param([sample(O - I, 500.0)], {0: 500.0, 100: 500.0, 287: 500.0}, id="no-yesterday-holds-the-last-value"),
    pytest.param(
        [sample(O - I, 500.0), *(sample(O - 288 * I + k * I, 100.0) for k in range(287))],
        {0: 500.0, 12: 100.0 + 400.0 * np.exp(-1), 286: 100.0 + 400.0 * np.exp(-286 / 12), 287: 500.0},
        id="blends-into-same-time-yesterday",
    ),
    pytest.param(
        [sample(O - I, 400.0), sample(O - I + 10_000, 600.0), sample(O + I, 9e9)],
        {0: 500.0, 5: 500.0},
        id="averages-windows-of-an-interval-ignores-the-future",
    ),
]


@pytest.mark.parametrize("samples, expected_energy", AVAILABILITY)
def test_availability_is_last_value_blended_into_yesterday(samples, expected_energy):
    points = forecast_availability(samples, O)
    assert len(points) == 288 and points[0].interval_start_ms == O and points[-1].interval_start_ms == O + 287 * I
    for step, energy in expected_energy.items():
        assert points[step].energy_available_wh == pytest.approx(energy)
        assert points[step].headroom_wh == pytest.approx(2 * energy)


def test_availability_needs_a_past_sample():
    with pytest.raises(ValueError, match="no aggregate"):
        forecast_availability([sample(O, 1.0)], O)
