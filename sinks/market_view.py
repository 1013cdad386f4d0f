"""What the market page shows, from the autobidder's store: per node and interval its forecast and actual
price, planned power, bid and award (tables of migration ``005_autobidder``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["market_rows", "market_view"]


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def market_rows(workflows: list[dict[str, Any]], facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (node, interval): status, prices, plan, bid, award (pure; newest interval first)."""
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    actual: dict[int, float] = {}
    for f in facts:
        key = (f["node_path"], _ms(f["interval_start"]))
        by_key.setdefault(key, {})[f["step"]] = f["fact"]
        if f["step"] == "fetched" and f["fact"].get("newest_price_usd_per_mwh") is not None:
            actual[int(f["fact"]["newest_price_interval_start"])] = float(f["fact"]["newest_price_usd_per_mwh"])
    out = []
    for w in workflows:
        start = _ms(w["interval_start"])
        steps = by_key.get((w["node_path"], start), {})
        forecast = (steps.get("forecast") or {}).get("prices_usd_per_mwh") or []
        optimized = steps.get("optimized") or {}
        planned = None
        if optimized.get("first_discharge_w") is not None:
            planned = float(optimized["first_discharge_w"]) - float(optimized.get("first_charge_w") or 0.0)
        out.append({
            "node_path": w["node_path"], "interval_start": start, "status": w["status"], "reason": w["reason"],
            "bid_id": w["bid_id"], "forecast_price_usd_per_mwh": forecast[0] if forecast else None,
            # the price the market published for the interval (a later workflow fetched it), else its clearing price
            "actual_price_usd_per_mwh": actual.get(start, (steps.get("awarded") or {}).get("clearing_price_usd_per_mwh")),
            "planned_w": planned,
            "bid_pairs": (steps.get("bid_submitted") or {}).get("pairs"),
            "awarded_w": (steps.get("awarded") or {}).get("awarded_w"),
            "clearing_price_usd_per_mwh": (steps.get("awarded") or {}).get("clearing_price_usd_per_mwh"),
        })
    return out


def market_view(dsn: str, *, limit: int = 96) -> list[dict[str, Any]]:
    """The newest ``limit`` workflows with their facts, as ``market_rows``."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        workflows = conn.execute("SELECT node_path, interval_start, status, bid_id, reason, at FROM autobidder_workflows "
                                 "ORDER BY interval_start DESC, node_path LIMIT %s", (limit,)).fetchall()
        if not workflows:
            return []
        oldest = min(w["interval_start"] for w in workflows)
        facts = conn.execute("SELECT node_path, interval_start, step, fact FROM autobidder_facts "
                             "WHERE interval_start >= %s - interval '1 day'", (oldest,)).fetchall()
    return market_rows(workflows, facts)
