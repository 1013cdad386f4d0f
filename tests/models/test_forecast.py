"""The price forecaster (no leakage, save/load round trip) and the availability forecast."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models import forecast
from models.features import FEATURE_NAMES, RECENT_DAYS, origin_features, origin_inputs, project_days, to_series, weather_basis
from models.forecast import AggregateSample, forecast_availability
from models.optimize import PricePoint
from devtools.market.prices import generate_prices

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
    rows, recent = origin_inputs(values, start_ms, origin, -8 * 3_600_000)
    assert rows.shape == (288, len(FEATURE_NAMES)) and recent.shape == (RECENT_DAYS, 288)
    changed_rows, changed_recent = origin_inputs(changed, start_ms, origin, -8 * 3_600_000)
    assert np.array_equal(rows, changed_rows, equal_nan=True)
    assert np.array_equal(recent, changed_recent, equal_nan=True)
    assert np.array_equal(rows, origin_features(values, start_ms, origin, -8 * 3_600_000), equal_nan=True)


def _kind_series(days: int, weekday: float, weekend: float, start_ms: int) -> np.ndarray:
    """One price per day kind, for ``days`` local days from ``start_ms`` (UTC days: offset 0)."""
    day = (start_ms // 86_400_000 + np.arange(days * 288) // 288 + 3) % 7  # Monday = 0
    return np.where(day >= 5, weekend, weekday).astype(float)


MONDAY_MS = 1_767_571_200_000  # 2026-01-05 00:00 UTC, a Monday


# Windows reach 30 min (the reference) and 2 h (anomalies) into the neighbouring days: the middle of the day.
MIDDLE = slice(30, 288 - 30)


@pytest.mark.parametrize(
    ("origin_day", "expected_reference"),
    [
        pytest.param(21, 40.0, id="monday-from-weekdays"),
        pytest.param(19, 60.0, id="saturday-from-weekend-days"),
        pytest.param(18, 40.0, id="friday"),
    ],
)
def test_the_reference_is_the_slot_on_days_of_the_same_kind(origin_day, expected_reference):
    values = _kind_series(28, weekday=40.0, weekend=60.0, start_ms=MONDAY_MS)
    column = dict(zip(FEATURE_NAMES, origin_features(values, MONDAY_MS, origin_day * 288, 0).T))
    assert column["reference"][MIDDLE].tolist() == pytest.approx([expected_reference] * 228)
    assert column["anomaly_1d_wide"][MIDDLE].tolist() == pytest.approx([0.0] * 228)
    assert column["weekend"].tolist() == [float(origin_day % 7 >= 5)] * 288


def test_the_anomaly_a_day_before_is_how_far_that_day_was_from_its_reference():
    values = _kind_series(28, weekday=40.0, weekend=60.0, start_ms=MONDAY_MS)
    origin = 23 * 288 + 144  # Wednesday noon
    values[origin - 288 : origin] += 5.0  # the 24 h before it 5 $/MWh above their kind
    column = dict(zip(FEATURE_NAMES, origin_features(values, MONDAY_MS, origin, 0).T))
    assert column["anomaly_1d_wide"][143] == pytest.approx(5.0)  # target - 24 h +- 2 h lies inside them
    assert column["anomaly_2d_wide"][143] == pytest.approx(0.0)


def test_the_anomaly_of_the_last_hour_fades_with_the_step():
    values = _kind_series(28, weekday=40.0, weekend=60.0, start_ms=MONDAY_MS)
    origin = 23 * 288 + 144
    values[origin - 12 : origin] += 3.0
    column = dict(zip(FEATURE_NAMES, origin_features(values, MONDAY_MS, origin, 0).T))
    assert column["anomaly_last_1h"].tolist() == pytest.approx([3.0] * 288)
    assert column["anomaly_last_1h_decayed_1h"][[0, 12]].tolist() == pytest.approx([3.0, 3.0 / np.e])
    assert column["anomaly_last_1h_decayed_4h"][[0, 48]].tolist() == pytest.approx([3.0, 3.0 / np.e])


def test_the_recent_days_are_the_anomaly_curves_by_local_slot():
    values = _kind_series(28, weekday=40.0, weekend=60.0, start_ms=MONDAY_MS)
    origin = 23 * 288 + 144  # Wednesday noon
    values[origin - 288 : origin] += np.arange(288.0)  # the 24 h before it: 0, 1, ... above their kind
    _, recent = origin_inputs(values, MONDAY_MS, origin, 0)
    # Row 0 by slot of the day: slot 144 (noon) was the first interval of the 24 h, 143 the last (the
    # reference of the last 30 min takes in the first minutes of the 24 h a day later: left out).
    assert recent[0, [144, 287, 0, 137]].tolist() == pytest.approx([0.0, 143.0, 144.0, 281.0])
    assert recent[1].tolist() == pytest.approx([0.0] * 288)


def test_the_weather_basis_finds_a_shape_that_persists_from_day_to_day():
    rng = np.random.default_rng(5)
    shape = np.exp(-0.5 * ((np.arange(288) - 228) / 20.0) ** 2)  # an evening bump
    weather = np.zeros(301)
    for day in range(1, weather.size):
        weather[day] = 0.7 * weather[day - 1] + rng.normal()
    curves = 10 * weather[:, None] * shape + rng.normal(0.0, 5.0, (weather.size, 288))
    recent = np.stack([curves[1:], curves[:-1]], axis=1)  # (yesterday, the day before)
    basis = weather_basis(recent, components=2)
    assert basis.shape == (288, 2)
    assert np.allclose(basis.T @ basis, np.eye(2))
    assert abs(basis[:, 0] @ shape) / np.linalg.norm(shape) > 0.95


def test_projecting_a_day_fits_its_known_slots_and_gives_nothing_without_them():
    basis = np.linalg.qr(np.random.default_rng(2).normal(size=(288, 3)))[0]
    curve = 2.0 * basis[:, 0] - basis[:, 2]
    holed = curve.copy()
    holed[:100] = np.nan
    fitted = project_days(basis, np.stack([holed, np.full(288, np.nan)]))
    assert fitted.shape == (2, 288, 3)
    assert np.allclose(fitted[0].sum(axis=-1), curve)
    assert np.allclose(fitted[0, :, 0], 2.0 * basis[:, 0]) and np.allclose(fitted[0, :, 1], 0.0)
    assert np.all(fitted[1] == 0.0)


def test_fit_learns_that_a_day_above_its_reference_is_followed_by_another():
    # Daily levels follow an AR(1) with persistence 0.8: the base must carry a good part of yesterday over.
    rng = np.random.default_rng(3)
    level, values = 0.0, []
    for _ in range(60):
        level = 0.8 * level + rng.normal(0.0, 10.0)
        values.extend(50.0 + level + rng.normal(0.0, 2.0, 288))
    values.extend([50.0 + 30.0] * 288)  # a day 30 $/MWh above the mean...
    points = [PricePoint(START + k * STEP, float(v)) for k, v in enumerate(values)]
    model = forecast.fit(points, utc_offset_h=-8, rounds=2)
    start_ms, series = to_series(points)
    origin = series.size  # ...then forecast the next from local midnight (START is 00:00 at UTC-8)
    rows = origin_features(series, start_ms, origin, -8 * 3_600_000)
    reference = rows[:, FEATURE_NAMES.index("reference")]
    forecast_next = np.array([p.price_usd_per_mwh for p in forecast.predict(model, START + origin * STEP, points)])
    carried = np.mean(forecast_next - reference) / np.mean(series[-288:] - reference)
    assert 0.4 <= carried <= 1.0


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
