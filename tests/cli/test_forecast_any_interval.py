"""`vpp train`, `vpp forecast`, `vpp forecast backtest` and `vpp plan` on 5-minute, 15-minute and hourly files."""

from __future__ import annotations

import csv
import json

import pytest

from cli.main import main
from synthetic_prices import synthetic_csv

BATTERY = ["--capacity-wh", "10000", "--max-charge-w", "5000", "--max-discharge-w", "5000", "--soc-pct", "50",
           "--reserve-pct", "10", "--efficiency", "0.9", "--degradation-usd-per-mwh", "5"]


@pytest.mark.parametrize("minutes", [5, 15, 60], ids=["5min", "15min", "hourly"])
def test_a_file_at_any_interval_trains_forecasts_backtests_and_plans(tmp_path, capsys, minutes):
    per_day = 24 * 60 // minutes
    prices = tmp_path / "prices.csv"
    prices.write_text(synthetic_csv(24, minutes, seed=minutes, forecast_rows=per_day))
    model = tmp_path / "model"

    assert main(["train", "--prices", str(prices), "--out", str(model), "--method", "lear", "--utc-offset-h", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["interval_minutes"] == minutes and summary["regressors"] == ["wind_mw"]
    assert summary["intervals"] == 24 * per_day

    assert main(["forecast", "--model", str(model), "--prices", str(prices)]) == 0
    forecast_csv = tmp_path / "forecast.csv"
    forecast_csv.write_text(capsys.readouterr().out)
    rows = list(csv.DictReader(forecast_csv.open()))
    assert len(rows) == per_day  # the whole next local day (the file ends at local midnight)
    assert rows[0]["interval_start"] == "2024-03-27T23:00:00Z"  # local midnight at +01:00
    assert all(float(r["p10_usd_per_mwh"]) <= float(r["p90_usd_per_mwh"]) for r in rows)

    out = tmp_path / "backtest.csv"
    assert main(["forecast", "backtest", "--prices", str(prices), "--from", "2024-03-25", "--horizon", "24h",
                 "--refit-days", "2", "--utc-offset-h", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "naive: D-7 Mon/Sat/Sun, else D-1" in captured.out and "MAE" in captured.out
    assert captured.err.rstrip().endswith("about    0 s left")  # the progress bar, finished
    table = list(csv.DictReader(out.open()))
    assert list(table[0]) == ["interval_start", "actual", "forecast", "p10", "p50", "p90"]
    assert len(table) == 3 * per_day

    assert main(["plan", "--prices", str(forecast_csv), *BATTERY]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["status"] == "optimal" and len(plain["schedule"]) == per_day
    assert main(["plan", "--prices", str(forecast_csv), "--risk-quantiles", *BATTERY]) == 0
    risky = json.loads(capsys.readouterr().out)
    moved = lambda doc: sum(r["charge_w"] + r["discharge_w"] for r in doc["schedule"])  # noqa: E731
    assert moved(risky) <= moved(plain) + 1e-6  # uncertainty makes it trade less, never more


def test_the_backtest_refuses_what_it_cannot_do(tmp_path, capsys):
    prices = tmp_path / "prices.csv"
    prices.write_text(synthetic_csv(24, 60))
    args = ["forecast", "backtest", "--prices", str(prices), "--out", str(tmp_path / "o.csv")]
    assert main([*args, "--from", "2024-03-25", "--horizon", "6h"]) == 1
    assert "give --horizon 24h" in capsys.readouterr().err
    assert main([*args, "--from", "2024-03-06"]) == 1
    assert "needs 21 days of history" in capsys.readouterr().err
    assert main([*args, "--from", "2024-03-25", "--penalty-days", "7"]) == 1
    assert "give it with --shrinkage lasso" in capsys.readouterr().err
    assert main([*args, "--from", "2024-03-25", "--shrinkage", "lasso", "--penalty-days", "0"]) == 1
    assert "penalty_days must be 1 or more" in capsys.readouterr().err
    assert main(["plan", "--prices", str(prices), "--risk-quantiles", *BATTERY]) == 1
    assert "needs the columns p10_usd_per_mwh" in capsys.readouterr().err
