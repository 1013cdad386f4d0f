"""The forecast worker with each kind of model, on markets of any interval (pure: the answer to a request).

The day-ahead model (``vpp train --method lear``) answers at its own interval, with the request's
regressors or without them (saying so); a model of another interval, or one that cannot forecast,
gives way to persistence with the reason in ``detail``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from flows.forecast_worker.flow import answer_forecast, load_model, persistence_forecast
from models import dayahead
from models.features import epoch_ms
from models.price_series import parse_prices
from synthetic_prices import synthetic_csv
from vpp.config import Settings

HOUR = 3_600_000
DAYS = 30


@pytest.fixture(scope="module")
def hourly():
    """An hourly market with a wind regressor: its series (with the next day's wind), a model fitted on it."""
    series = parse_prices(synthetic_csv(DAYS, 60, seed=5, forecast_rows=24), "hourly.csv")
    model = dayahead.fit(series, utc_offset_ms=HOUR, windows=(28,))
    return series, model


def request(series, origin_ms: int, horizon: int, *, wind: bool, interval_ms: int = HOUR, hours: int = 8 * 24) -> dict:
    """What the autobidder sends: ``hours`` of prices before the origin, the wind from there to the horizon's end."""
    start = origin_ms - hours * HOUR
    prices = {epoch_ms(p.interval_start): p.price_usd_per_mwh for p in series.points}
    rows = (origin_ms - start) // interval_ms + horizon
    winds = {epoch_ms(s): float(v) for s, v in zip(series.starts, series.regressors[:, 0])}
    return {"request_id": "us/ca|1|forecast", "node_path": "us/ca", "pricing_node": "DE", "interval_start": origin_ms,
            "horizon": horizon, "history_start": start, "interval_ms": interval_ms,
            "history_usd_per_mwh": [prices.get(start + k * interval_ms) for k in range((origin_ms - start) // interval_ms)],
            "regressors": [{"name": "wind_mw", "values": [winds.get(start + k * interval_ms) for k in range(rows)]}]
            if wind else [], "requested_at": 0}


def test_the_day_ahead_model_forecasts_the_next_day_as_vpp_forecast_does(hourly) -> None:
    series, model = hourly
    origin = epoch_ms(series.points[-1].interval_start) + HOUR  # a local midnight
    _, rows = dayahead.predict(model, series)
    result = answer_forecast(model, lambda: 1.0, request(series, origin, 24, wind=True))
    assert (result["method"], result["detail"]) == ("lear", None)
    np.testing.assert_allclose(result["prices_usd_per_mwh"], rows[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(result["p10_usd_per_mwh"], rows[:, 1], rtol=1e-9, atol=1e-9)  # its quantiles too
    np.testing.assert_allclose(result["p90_usd_per_mwh"], rows[:, 3], rtol=1e-9, atol=1e-9)
    assert all(lo < hi for lo, hi in zip(result["p10_usd_per_mwh"], result["p90_usd_per_mwh"]))


def test_from_mid_day_the_rest_of_today_is_its_day_ahead_forecast_and_tomorrow_follows(hourly) -> None:
    series, model = hourly
    midnight = epoch_ms(series.points[-1].interval_start) + HOUR - 24 * HOUR  # the last priced day
    origin = midnight + 14 * HOUR
    result = answer_forecast(model, lambda: 1.0, request(series, origin, 24, wind=True))
    lines = synthetic_csv(DAYS, 60, seed=5, forecast_rows=24).splitlines()
    last_day = [f"{stamp},,{wind}" for stamp, _, wind in (line.split(",") for line in lines[1 + (DAYS - 1) * 24:][:24])]
    before_today = parse_prices("\n".join(lines[: 1 + (DAYS - 1) * 24] + last_day) + "\n", "until-yesterday.csv")
    _, today = dayahead.predict(model, before_today)  # `vpp forecast` of the last day, from the days before
    assert result["method"] == "lear" and len(result["prices_usd_per_mwh"]) == 24
    np.testing.assert_allclose(result["prices_usd_per_mwh"][:10], today[14:, 0], rtol=1e-9, atol=1e-9)
    assert np.isfinite(result["prices_usd_per_mwh"]).all()


def test_without_the_regressors_the_day_ahead_model_still_forecasts_and_says_what_it_went_without(hourly) -> None:
    series, model = hourly
    origin = epoch_ms(series.points[-1].interval_start) + HOUR
    result = answer_forecast(model, lambda: 1.0, request(series, origin, 36, wind=False))
    assert result["method"] == "lear" and len(result["prices_usd_per_mwh"]) == 36
    assert "without the regressors wind_mw" in result["detail"] and "calibration median" in result["detail"]
    assert np.isfinite(result["prices_usd_per_mwh"]).all()


@pytest.mark.parametrize(("interval_ms", "hours", "detail"), [
    (15 * 60_000, 8 * 24, "the lear model could not forecast: it forecasts intervals of 1 hour, the market's last 15 minutes"),
    (HOUR, 12, "the lear model could not forecast: no price of the day before the forecast's first day"),  # today's only
])
def test_a_request_the_day_ahead_model_cannot_take_is_answered_by_persistence_saying_why(hourly, interval_ms, hours,
                                                                                           detail) -> None:
    series, model = hourly
    origin = epoch_ms(series.points[-1].interval_start) + HOUR - 10 * HOUR  # 14:00 of the last priced day
    req = request(series, origin, 8, wind=True, interval_ms=interval_ms, hours=hours)
    result = answer_forecast(model, lambda: 1.0, req)
    assert result["method"] == "persistence" and result["detail"].startswith(detail), result["detail"]
    assert result["prices_usd_per_mwh"] == persistence_forecast(req["history_usd_per_mwh"], req["history_start"],
                                                                origin, 8, interval_ms)
    assert result["p10_usd_per_mwh"] == result["p90_usd_per_mwh"] == []  # persistence has no quantiles


def test_the_five_minute_xgboost_model_gives_way_to_persistence_on_an_hourly_market() -> None:
    from models.forecast import PriceForecaster

    start = datetime(2026, 1, 1, tzinfo=UTC)
    model = PriceForecaster(booster=None, utc_offset_ms=0, metadata={"kind": "price_forecaster", "interval_ms": 300_000})
    origin = epoch_ms(start) + 3 * 24 * HOUR
    history = [float(h % 24) for h in range(48)]
    result = answer_forecast(model, lambda: 1.0, {
        "request_id": "r", "node_path": "n", "interval_start": origin, "horizon": 3, "history_start": origin - 48 * HOUR,
        "history_usd_per_mwh": history, "interval_ms": HOUR, "regressors": []})
    assert result["method"] == "persistence" and result["prices_usd_per_mwh"] == [0.0, 1.0, 2.0]  # a day before
    assert "it forecasts intervals of 5 minutes, the market's last 1 hour" in result["detail"]
    assert "vpp train --method lear" in result["detail"]


def test_the_worker_loads_whichever_model_the_directory_holds(hourly, tmp_path) -> None:
    _, model = hourly
    dayahead.save(model, tmp_path / "lear")
    assert load_model(Settings(forecast_model_dir=str(tmp_path / "lear"))).metadata == model.metadata | {"members": 1}
    assert load_model(Settings()) is None
    with pytest.raises(ValueError, match="does not hold a price model"):
        load_model(Settings(forecast_model_dir=str(tmp_path / "nothing")))
