"""The demo's market table: per interval, the autobidder's forecast, plan, bid and award next to the fleet's
measured power (pure functions over the autobidder's stored facts)."""

from __future__ import annotations

__all__ = ["DEMO_MARKET_LOCAL_START_H", "market_rows", "measure_interval_power", "morning_utc_offset_h", "utc_zone"]

#: The demo's pricing node is at its morning ramp (06:30 local) when the demo starts: a simulated day moves the
#: plan most from there (it sells into the morning peak, then buys in the midday solar dip), so awards come within
#: the demo's first minutes whatever the hour it is started at.
DEMO_MARKET_LOCAL_START_H = 6.5
_DAY_MS = 86_400_000


def morning_utc_offset_h(now_ms: int, local_h: float = DEMO_MARKET_LOCAL_START_H) -> float:
    """The UTC offset, in whole quarter hours within [-12, 12), that makes a pricing node's local time ``local_h`` now."""
    now_h = (now_ms % _DAY_MS) / 3_600_000
    offset_h = round((((local_h - now_h) + 12) % 24 - 12) * 4) / 4
    return offset_h if offset_h < 12 else offset_h - 24


def utc_zone(offset_h: float) -> str:
    """``UTC-03:45`` for an offset of -3.75 hours."""
    minutes = round(abs(offset_h) * 60)
    return f"UTC{'-' if offset_h < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def measure_interval_power(measured: dict[int, dict[str, float]], row: dict | None, interval_ms: int = 300_000) -> None:
    """Keep a node's battery power at a time (``window_start``: a datetime or epoch ms) under its market interval."""
    if row is None or row.get("battery_w") is None:
        return
    start = row["window_start"]
    start_ms = int(start.timestamp() * 1000) if hasattr(start, "timestamp") else int(start)
    measured.setdefault(start_ms - start_ms % interval_ms, {})[str(start_ms)] = float(row["battery_w"])


def market_rows(facts: list[dict], measured_w, from_interval_ms: int = 0) -> list[tuple[str, ...]]:
    """Per market interval from ``from_interval_ms`` on: forecast price, planned power, bid, award and clearing price (pure).

    ``facts`` are the autobidder's stored facts of one node; the fleet's measured battery power
    (latest closed window of the node) is shown on the newest awarded interval; or, given
    ``measure_interval_power``'s map, the mean of the windows measured within each awarded interval. Intervals are chosen
    by their start, not by when their facts were recorded: a run shortly after another one works on
    the same interval, and the store keeps that interval's first facts (they are immutable).
    """
    from datetime import datetime, timezone

    by_interval: dict[int, dict[str, dict]] = {}
    for f in facts:
        if f["interval_start"] >= from_interval_ms:
            by_interval.setdefault(f["interval_start"], {})[f["step"]] = f["fact"]
    rows = []
    newest_awarded = max((t for t, steps in by_interval.items() if "awarded" in steps), default=None)
    # the newest intervals that bid (at speed, a minute of idle intervals would hide them), and the newest one
    bidding = [t for t in sorted(by_interval) if {"bid_submitted", "awarded"} & by_interval[t].keys()]
    for start in sorted(set(bidding[-5:] + sorted(by_interval)[-1:])):
        steps = by_interval[start]
        forecast = steps.get("forecast", {}).get("prices_usd_per_mwh") or []
        optimized = steps.get("optimized", {})
        planned = None
        if optimized.get("first_discharge_w") is not None:
            planned = optimized["first_discharge_w"] - (optimized.get("first_charge_w") or 0.0)
        bid = steps.get("bid_submitted", {}).get("pairs") or []
        award = steps.get("awarded", {})
        outcome = "no bid: " + steps["no_bid"]["reason"][:40] if "no_bid" in steps else ""
        rows.append((
            datetime.fromtimestamp(start / 1000, timezone.utc).strftime("%H:%M"),
            f"{forecast[0]:,.1f}" if forecast else "-",
            "-" if planned is None else f"{planned:,.0f}",
            ", ".join(f"{p['quantity_w']:,.0f} W @ {p['price_usd_per_mwh']:,.1f}" for p in bid) or outcome or "-",
            "-" if not award else f"{award.get('awarded_w', 0):,.0f} W @ {award.get('clearing_price_usd_per_mwh', 0):,.1f}",
            _measured(measured_w, start, award, newest_awarded),
        ))
    return rows


def _measured(measured_w, start: int, award: dict, newest_awarded: int | None) -> str:
    if isinstance(measured_w, dict):
        windows = measured_w.get(start, {})
        return f"{sum(windows.values()) / len(windows):,.0f}" if award and windows else ""
    return f"{measured_w:,.0f}" if start == newest_awarded and measured_w is not None else ""
