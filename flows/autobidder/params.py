"""The autobidder's settings and names, pure: its params for a market interval, the ids it derives, the node as a battery.

``BidderParams.for_market`` turns times (a day ahead, eight days of history) into counts of the market's
intervals; ``price_interval_problem`` says why a price record of another interval length cannot be used.
Re-exported by ``flows.autobidder.logic``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from models.optimize import Battery
from models.price_series import describe_interval

__all__ = ["DAY_MS", "HISTORY_MS", "INTERVAL_MS", "BidderParams", "battery_from_aggregate", "bid_id_for",
           "command_id_for", "price_interval_problem", "request_id_for"]

#: The default market interval (5 minutes); ``BidderParams.interval_ms`` is the one a state uses.
INTERVAL_MS = 300_000
DAY_MS = 86_400_000
#: Price history a forecast request carries (``for_market``): the day-ahead model's longest lag (the
#: same day a week earlier) and the day before the forecast.
HISTORY_MS = 8 * DAY_MS


@dataclass(frozen=True)
class BidderParams:
    """How the autobidder of a node bids (from settings: ``for_market``); counts are intervals of ``interval_ms``."""

    lead_intervals: int = 2
    horizon: int = 288
    history_intervals: int = 2 * 288
    step_timeout_ms: int = 30_000
    #: how long a workflow waits for the node's first usable aggregate. Long enough for the first window
    #: to close after a start (window + lateness + the stores), short enough to leave the forecast, the
    #: optimization and the bid time before the gate of an interval ``lead_intervals`` ahead.
    state_wait_ms: int = 120_000
    retry_ms: int = 2_000
    efficiency: float = 0.9
    degradation_usd_per_mwh: float = 20.0
    keep_intervals: int = 288
    interval_ms: int = INTERVAL_MS
    #: plan to sell at the forecast's p10 and buy at its p90 when the forecast carries them (else at the forecast)
    risk_quantiles: bool = False

    @classmethod
    def for_market(cls, interval_ms: int, *, horizon_ms: int = DAY_MS, history_ms: int = HISTORY_MS,
                   keep_ms: int = DAY_MS, **rest: Any) -> "BidderParams":
        """Params for a market of ``interval_ms``: horizon, history and workflows kept given in time,
        counted in whole intervals (at least one)."""
        if interval_ms <= 0 or DAY_MS % interval_ms:
            raise ValueError(f"a market interval of {interval_ms} ms does not divide a day")
        return cls(horizon=max(1, horizon_ms // interval_ms), history_intervals=max(1, history_ms // interval_ms),
                   keep_intervals=max(1, keep_ms // interval_ms), interval_ms=interval_ms, **rest)


def price_interval_problem(record: dict[str, Any], interval_ms: int) -> str | None:
    """Why a ``market.prices`` record cannot be used by an autobidder of ``interval_ms`` (None: it can)."""
    start, end = int(record["interval_start"]), int(record["interval_end"])
    if end == start + interval_ms:
        return None
    expected = describe_interval(timedelta(milliseconds=interval_ms))
    if end <= start:
        return f"a price whose interval_end ({end}) is not after its interval_start ({start})"
    return (f"a price for an interval of {describe_interval(timedelta(milliseconds=end - start))} (from "
            f"{_dt(start).isoformat()}), but this autobidder bids on intervals of {expected} (setting "
            f"market_interval_s = {interval_ms // 1000}): set market_interval_s to the market's interval")


def bid_id_for(node_path: str, interval_start_ms: int) -> str:
    """The one bid id of a node for an interval: a re-sent bid is the same bid."""
    digest = hashlib.sha256(f"{node_path}|{int(interval_start_ms)}".encode()).hexdigest()[:24]
    return f"bid-{digest}"


def command_id_for(bid_id: str) -> str:
    return f"cmd-{bid_id}"


def request_id_for(node_path: str, interval_start_ms: int, kind: str) -> str:
    return f"{node_path}|{int(interval_start_ms)}|{kind}"


def battery_from_aggregate(aggregate: dict[str, Any], params: BidderParams) -> Battery | None:
    """The node as one battery, from its latest ``fleet.aggregates`` record (None: not enough known)."""
    capacity = float(aggregate.get("capacity_wh") or 0.0)
    soc = aggregate.get("soc_pct")
    if capacity <= 0 or soc is None or not math.isfinite(soc):
        return None
    soc = min(100.0, max(0.0, float(soc)))
    available_pct = 100.0 * float(aggregate.get("energy_available_wh") or 0.0) / capacity
    reserve = min(soc, max(0.0, soc - available_pct))
    return Battery(capacity_wh=capacity, max_charge_w=max(0.0, float(aggregate.get("charge_available_w") or 0.0)),
                   max_discharge_w=max(0.0, float(aggregate.get("discharge_available_w") or 0.0)), soc_pct=soc,
                   reserve_pct=reserve, efficiency=params.efficiency,
                   degradation_usd_per_mwh=params.degradation_usd_per_mwh)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)
