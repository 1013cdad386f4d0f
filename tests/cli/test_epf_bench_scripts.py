"""bench/epftoolbox/convert.py and bench/epftoolbox/risk_plan.py on a tiny epftoolbox-format file: the DE pipeline still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from cli.main import main
from synthetic_prices import synthetic_csv

REPO = Path(__file__).resolve().parents[2]


def test_an_epftoolbox_file_converts_backtests_and_plans_both_ways(tmp_path, capsys):
    ours = synthetic_csv(30, 60, seed=5).splitlines()[1:]
    lines = ["date,Price,Load Forecast,PV+Wind Forecast"]
    for k, row in enumerate(ours):  # the same prices as epftoolbox writes them: naive local time, 24 h a day
        _, price, wind = row.split(",")
        local = datetime(2024, 3, 4) + timedelta(hours=k)
        lines.append(f"{local:%Y-%m-%d %H:%M:%S},{price},{1000 + k % 24},{wind}")
    source, converted = tmp_path / "DE.csv", tmp_path / "prices.csv"
    source.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "epftoolbox" / "convert.py"), str(source), str(converted)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    head = converted.read_text().splitlines()[:2]
    assert head == ["interval_start,price_usd_per_mwh,load_forecast,pv_wind_forecast",
                    f"2024-03-04T00:00:00+01:00,{ours[0].split(',')[1]},1000,{ours[0].split(',')[2]}"]

    backtest = tmp_path / "backtest.csv"
    assert main(["forecast", "backtest", "--prices", str(converted), "--from", "2024-03-25", "--out", str(backtest)]) == 0
    capsys.readouterr()
    done = subprocess.run([sys.executable, str(REPO / "bench" / "epftoolbox" / "risk_plan.py"), str(backtest)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    for plan in ("plain", "risk-aware", "perfect foresight"):
        assert plan in done.stdout
