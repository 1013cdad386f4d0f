"""A node's history from the time-series store: the ``fleet_node`` points ``store-aggregates`` writes.

Read through VictoriaMetrics' export API (``/api/v1/export``), where a field ``F`` of measurement
``fleet_node`` is the series ``fleet_node_F`` labelled ``node_path``. Points come back exactly as
written (no resampling), oldest first.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["SERIES_FIELDS", "node_series", "series_query", "parse_export"]

SERIES_FIELDS = ("battery_w", "solar_w", "load_w", "grid_w", "energy_available_wh", "headroom_wh",
                 "discharge_available_w", "charge_available_w", "capacity_wh", "soc_pct", "devices_known",
                 "devices_reporting", "estimated_devices", "late")


def _label(value: str) -> str:
    return json.dumps(value)  # a PromQL label value is a double-quoted string with JSON-like escapes


def series_query(node_path: str, field: str) -> str:
    """The series selector of one field of one node (pure)."""
    if field not in SERIES_FIELDS:
        raise ValueError(f"unknown field {field!r}; one of {', '.join(SERIES_FIELDS)}")
    return f'{{__name__="fleet_node_{field}",node_path={_label(node_path)}}}'


def parse_export(text: str) -> list[tuple[int, float]]:
    """``(ts_ms, value)`` pairs of an export answer (JSON lines), oldest first, merged over series (pure)."""
    points: dict[int, float] = {}
    for line in text.splitlines():
        if line.strip():
            doc = json.loads(line)
            points.update(zip(doc.get("timestamps", ()), doc.get("values", ())))
    return sorted(points.items())


def node_series(base_url: str, node_path: str, field: str, from_ms: int, to_ms: int, *,
                timeout_s: float = 10.0) -> list[tuple[int, float]]:
    """The points of one field of one node between ``from_ms`` and ``to_ms`` (inclusive)."""
    response = httpx.post(f"{base_url.rstrip('/')}/api/v1/export", timeout=timeout_s,
                          data={"match[]": series_query(node_path, field), "start": str(from_ms / 1000),
                                "end": str(to_ms / 1000)})
    response.raise_for_status()
    return parse_export(response.text)


def node_series_points(*args: Any, **kwargs: Any) -> list[dict[str, float]]:
    return [{"ts": ts, "value": v} for ts, v in node_series(*args, **kwargs)]
