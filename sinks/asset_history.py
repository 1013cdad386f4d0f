"""Reading the temporal asset registry: the current devices, a device's versions, the registry as of a time.

``asset_versions`` (migration ``100_asset_versions``) holds every version of every device with
``valid_from`` / ``valid_to`` (NULL: current); ``assets`` is the current table. A device's history is
linked to the devices it replaced and that replaced it (``replaces``), so a site's story reads on across a
battery swap. The writer is ``sinks.asset_registry``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from vpp.assets import Asset, asset_from_row

__all__ = ["list_assets", "history", "assets_at", "versions", "VERSION_COLUMNS", "parse_time"]

_ASSET_COLUMNS = ("device_id", "site_id", "region_path", "timezone", "capacity_wh", "max_charge_w",
                  "max_discharge_w", "reserve_pct", "enrolled_peak_shaving", "status", "programs", "replaces")
VERSION_COLUMNS = _ASSET_COLUMNS + ("version", "valid_from", "valid_to", "changed_by", "reason")
_UNDER = ("(region_path = %s OR left(region_path, length(%s) + 1) = %s || '/' "
          "OR region_path || '/' || device_id = %s)")


def _connect(dsn: str):
    from sinks.asset_registry import connect_registry

    return connect_registry(dsn)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (``2026-12-07T18:00:00Z``; a date alone is its midnight UTC; naive means UTC)."""
    from vpp.errors import UserError

    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"time {text!r} is not ISO-8601 (e.g. 2026-12-07T18:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _prefix_filter(prefix: str | None) -> tuple[str, tuple]:
    p = (prefix or "").strip().strip("/")
    return (" AND " + _UNDER, (p, p, p, p)) if p else ("", ())


def list_assets(dsn: str, prefix: str | None = None, *, include_decommissioned: bool = False) -> list[Asset]:
    """Current devices whose site path is ``prefix`` or lies below it (or whose leaf is ``prefix``), by path."""
    where, params = _prefix_filter(prefix)
    status = "" if include_decommissioned else " AND status <> 'decommissioned'"
    query = f"SELECT {', '.join(_ASSET_COLUMNS)} FROM assets WHERE true{status}{where} ORDER BY region_path, device_id"
    from psycopg.rows import dict_row

    with _connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return [asset_from_row(r) for r in cur.execute(query, params).fetchall()]


def assets_at(dsn: str, at: datetime, prefix: str | None = None) -> list[Asset]:
    """The registry as it was at ``at``: each device's version valid then, decommissioned ones left out."""
    where, params = _prefix_filter(prefix)
    query = (f"SELECT {', '.join(_ASSET_COLUMNS)} FROM asset_versions WHERE valid_from <= %s "
             f"AND (valid_to IS NULL OR valid_to > %s) AND status <> 'decommissioned'{where} "
             "ORDER BY region_path, device_id")
    from psycopg.rows import dict_row

    with _connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return [asset_from_row(r) for r in cur.execute(query, (at, at, *params)).fetchall()]


def versions(dsn: str, device_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Every version (of ``device_ids``, or of all devices), by device and version: dicts of VERSION_COLUMNS."""
    from psycopg.rows import dict_row

    query = f"SELECT {', '.join(VERSION_COLUMNS)} FROM asset_versions"
    params: tuple = ()
    if device_ids is not None:
        query += " WHERE device_id = ANY(%s)"
        params = (device_ids,)
    with _connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query + " ORDER BY device_id, version", params).fetchall()


def history(dsn: str, device_id: str) -> list[dict[str, Any]]:
    """The versions of a device and of the devices linked to it by ``replaces`` (both ways), oldest first.

    Empty when the device was never registered.
    """
    linked = """
        WITH RECURSIVE chain(device_id) AS (
            SELECT %s::text
            UNION
            SELECT CASE WHEN v.device_id = c.device_id THEN v.replaces ELSE v.device_id END
            FROM asset_versions v JOIN chain c
              ON (v.device_id = c.device_id AND v.replaces IS NOT NULL) OR v.replaces = c.device_id
        ) SELECT device_id FROM chain"""
    with _connect(dsn) as conn:
        ids = [r[0] for r in conn.execute(linked, (device_id,)).fetchall()]
    rows = versions(dsn, ids)
    rows.sort(key=lambda r: (r["valid_from"], r["device_id"] != device_id, r["device_id"], r["version"]))
    return rows
