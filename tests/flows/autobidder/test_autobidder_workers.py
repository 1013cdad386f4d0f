"""The forecast and optimize workers' answers (pure functions of a request)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.forecast_worker.flow import answer_forecast, persistence_forecast
from flows.optimize_worker.flow import answer_optimize

I = 300_000
T0 = 1_767_225_600_000


def request(history: list, horizon: int = 4, origin: int = T0) -> dict:
    return {"request_id": "n|1|forecast", "node_path": "n", "pricing_node": "SP15", "interval_start": origin,
            "horizon": horizon, "history_start": origin - len(history) * I, "history_usd_per_mwh": history,
            "requested_at": 0}


@pytest.mark.parametrize(("history", "origin_offset", "horizon", "expected"), [
    ([10.0, 20.0, 30.0], 0, 3, [30.0, 30.0, 30.0]),                    # less than a day: the last price
    ([10.0, None, None], 0, 2, [10.0, 10.0]),                           # gaps: the last known price
    ([float(k) for k in range(288)], 0, 3, [0.0, 1.0, 2.0]),            # a day: the same time yesterday
    ([float(k) for k in range(288)], 0, 290, None),                     # beyond a day: yesterday's forecast again
])
def test_persistence_forecast(history, origin_offset, horizon, expected) -> None:
    origin = T0
    got = persistence_forecast(history, origin - len(history) * I, origin, horizon)
    assert len(got) == horizon
    if expected is not None:
        assert got == expected
    else:
        assert got[288:] == got[:2]


def test_persistence_without_any_price_answers_empty_with_the_reason() -> None:
    result = answer_forecast(None, lambda: 1.0, request([None, None]))
    assert result["prices_usd_per_mwh"] == [] and "no known price" in result["detail"]


def test_without_a_model_the_worker_says_it_used_persistence() -> None:
    result = answer_forecast(None, lambda: 1.0, request([5.0, 6.0]))
    assert result["method"] == "persistence" and result["detail"] == "no forecast model configured"
    assert result["prices_usd_per_mwh"] == [6.0] * 4 and result["produced_at"] == 1000


def test_with_a_model_the_worker_forecasts_with_xgboost() -> None:
    from models.forecast import fit
    from models.optimize import PricePoint

    start = datetime.fromtimestamp((T0 - 3 * 288 * I) / 1000, timezone.utc)
    history = [PricePoint(start + timedelta(minutes=5 * k), 30.0 + 20.0 * ((k // 12) % 2)) for k in range(3 * 288)]
    model = fit(history, rounds=5)
    result = answer_forecast(model, lambda: 1.0, request([p.price_usd_per_mwh for p in history], horizon=300))
    assert result["method"] == "xgboost" and result["detail"] is None
    assert len(result["prices_usd_per_mwh"]) == 300  # 288 from the model, persistence beyond


def test_the_optimize_worker_returns_the_plan_with_its_status() -> None:
    req = {"request_id": "n|1|optimize", "node_path": "n", "interval_start": T0, "prices_usd_per_mwh": [10.0, 100.0],
           "capacity_wh": 10_000.0, "max_charge_w": 5_000.0, "max_discharge_w": 5_000.0, "soc_pct": 50.0,
           "reserve_pct": 10.0, "efficiency": 0.9, "degradation_usd_per_mwh": 5.0, "requested_at": 0}
    result = answer_optimize("cbc", None, lambda: 2.0, req)
    assert result["status"] == "optimal" and len(result["charge_w"]) == 2 and result["final_energy_wh"] is not None
    assert result["discharge_w"][1] > 0


def test_a_request_the_optimizer_cannot_take_is_answered_with_an_error_status() -> None:
    req = {"request_id": "n|1|optimize", "node_path": "n", "interval_start": T0, "prices_usd_per_mwh": [10.0],
           "capacity_wh": 0.0, "max_charge_w": 5_000.0, "max_discharge_w": 5_000.0, "soc_pct": 50.0,
           "reserve_pct": 10.0, "efficiency": 0.9, "degradation_usd_per_mwh": 5.0, "requested_at": 0}
    result = answer_optimize("cbc", None, lambda: 2.0, req)
    assert result["status"].startswith("error: capacity_wh must be positive") and result["charge_w"] == []


@pytest.mark.parametrize(("toml", "environ", "expected"), [
    ("", {}, ("cbc", 20.0)),                                                               # defaults
    ('optimize_solver = "highs"\noptimize_time_limit_s = 2.5\n', {}, ("highs", 2.5)),      # the TOML file
    ('optimize_solver = "highs"\n', {"VPP_OPTIMIZE_SOLVER": "cbc"}, ("cbc", 20.0)),        # the environment wins
    ("", {"VPP_OPTIMIZE_TIME_LIMIT_S": "0"}, ("cbc", None)),                               # 0: no time limit
])
def test_the_optimize_worker_takes_solver_and_time_limit_from_the_settings(tmp_path, toml, environ, expected) -> None:
    from flows.optimize_worker.flow import solver_options
    from vpp.config import Settings

    config = tmp_path / "vpp.toml"
    config.write_text(toml)
    settings = Settings.load(state_dir=tmp_path, config_file=config, environ=environ)
    assert solver_options(settings) == expected


@pytest.mark.parametrize(("changes", "message"), [
    ({"optimize_solver": "gurobi"}, "optimize_solver' = 'gurobi' is not one of cbc, highs"),
    ({"optimize_time_limit_s": -1.0}, "optimize_time_limit_s' = -1.0 must be 0"),
])
def test_the_optimize_worker_refuses_bad_solver_settings_before_it_starts(tmp_path, changes, message) -> None:
    """The settings refuse them (however they are built), so no worker starts with them."""
    from flows.optimize_worker.flow import build_flow
    from vpp.config import Settings

    with pytest.raises(ValueError, match=message):
        build_flow(Settings.load(state_dir=tmp_path, environ={}).replace(**changes))
