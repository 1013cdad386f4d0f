"""Synthetic prices files for the forecaster's tests: any interval, a regressor that drives the price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np


def synthetic_csv(days: int, minutes: int, *, seed: int = 0, forecast_rows: int = 0) -> str:
    """Prices driven by a daily shape and a wind regressor that is known ahead, plus noise; UTC+1 days."""
    rng = np.random.default_rng(seed)
    per_day = 24 * 60 // minutes
    n = days * per_day
    start = datetime(2024, 3, 4, tzinfo=UTC) - timedelta(hours=1)  # a Monday, local midnight at +01:00
    hours = np.arange(n + forecast_rows) * minutes / 60
    wind = np.repeat(rng.gamma(2.0, 5.0, size=(n + forecast_rows) // per_day + 2), per_day)[: n + forecast_rows]
    wind = wind + 3 * np.sin(hours / 5)
    price = 40 + 12 * np.sin(2 * np.pi * (hours % 24 - 7) / 24) - 1.5 * wind + rng.normal(0, 2, n + forecast_rows)
    lines = ["interval_start,price_usd_per_mwh,wind_mw"]
    for k in range(n + forecast_rows):
        stamp = (start + timedelta(minutes=minutes * k)).astimezone(UTC).isoformat().replace("+00:00", "Z")
        lines.append(f"{stamp},{price[k]:.2f},{wind[k]:.2f}" if k < n else f"{stamp},,{wind[k]:.2f}")
    return "\n".join(lines) + "\n"
