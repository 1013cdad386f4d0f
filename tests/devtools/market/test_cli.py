"""`vpp market --history-days`, `vpp train` and `vpp forecast` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from models.forecast import load
from cli.main import main
from cli.plan import read_prices


def test_market_history_writes_a_prices_csv_plan_and_train_read(tmp_path, capsys):
    out = tmp_path / "prices.csv"
    assert main(["market", "--history-days", "9", "--out", str(out), "--end", "2026-06-01T00:00:00Z", "--seed", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["intervals"] == 9 * 288
    points = read_prices(out)
    assert len(points) == 9 * 288
    assert points[-1].interval_start.isoformat() == "2026-05-31T23:55:00+00:00"
    assert out.read_text().splitlines()[0] == "interval_start,price_usd_per_mwh"

    model_dir = tmp_path / "model"
    assert main(["train", "--prices", str(out), "--out", str(model_dir), "--rounds", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["intervals"] == 9 * 288 and summary["training_rows"] > 0
    assert load(model_dir).metadata["utc_offset_ms"] == -8 * 3_600_000

    assert main(["forecast", "--model", str(model_dir), "--prices", str(out)]) == 0
    forecast_csv = tmp_path / "forecast.csv"
    forecast_csv.write_text(capsys.readouterr().out)
    forecast = read_prices(forecast_csv)
    assert len(forecast) == 288 and forecast[0].interval_start.isoformat() == "2026-06-01T00:00:00+00:00"


def test_history_without_out_and_a_missing_model_are_one_line_errors(tmp_path, capsys):
    assert main(["market", "--history-days", "1"]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(["forecast", "--model", str(tmp_path / "none"), "--prices", str(Path(__file__))]) == 1
    assert "does not hold a price model" in capsys.readouterr().err
