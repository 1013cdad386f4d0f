"""Inputs of the battery optimizer's tests: 5-minute price series and a battery with overridable defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.optimize import Battery, PricePoint

START = datetime(2024, 6, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
H = 1 / 12  # hours in a step

#: 1 kWh, 12 kW both ways, empty, lossless, no degradation cost, no final state of charge
BATTERY_DEFAULTS = dict(capacity_wh=1000.0, max_charge_w=12000.0, max_discharge_w=12000.0, soc_pct=0.0, reserve_pct=0.0,
                        efficiency=1.0, degradation_usd_per_mwh=0.0, final_soc_pct=None)


def prices_of(*values: float) -> list[PricePoint]:
    """A price per 5-minute step from START."""
    return [PricePoint(START + k * STEP, float(v)) for k, v in enumerate(values)]


def battery(**overrides) -> Battery:
    return Battery(**{**BATTERY_DEFAULTS, **overrides})
