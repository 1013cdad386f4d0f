"""The asset registry in PostgreSQL: import (all or nothing) and list; the types and CSV format are ``vpp.assets``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from vpp.assets import CSV_COLUMNS, OPTIONAL_COLUMNS, Asset, ImportCounts, parse_assets_csv
from vpp.errors import UserError

__all__ = ["upsert_assets", "list_assets", "import_assets_file"]


_UPSERT = """
INSERT INTO assets (device_id, site_id, region_path, timezone, capacity_wh, max_charge_w,
                    max_discharge_w, reserve_pct, enrolled_peak_shaving, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (device_id) DO UPDATE SET
    site_id = EXCLUDED.site_id, region_path = EXCLUDED.region_path, timezone = EXCLUDED.timezone,
    capacity_wh = EXCLUDED.capacity_wh, max_charge_w = EXCLUDED.max_charge_w,
    max_discharge_w = EXCLUDED.max_discharge_w, reserve_pct = EXCLUDED.reserve_pct,
    enrolled_peak_shaving = EXCLUDED.enrolled_peak_shaving, updated_at = now()
WHERE (assets.site_id, assets.region_path, assets.timezone, assets.capacity_wh, assets.max_charge_w,
       assets.max_discharge_w, assets.reserve_pct, assets.enrolled_peak_shaving)
      IS DISTINCT FROM
      (EXCLUDED.site_id, EXCLUDED.region_path, EXCLUDED.timezone, EXCLUDED.capacity_wh, EXCLUDED.max_charge_w,
       EXCLUDED.max_discharge_w, EXCLUDED.reserve_pct, EXCLUDED.enrolled_peak_shaving)
RETURNING (xmax = 0) AS inserted
"""

_COLUMNS_SQL = ", ".join(CSV_COLUMNS + OPTIONAL_COLUMNS)


def _connect(dsn: str, **kwargs):
    import psycopg

    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot connect to PostgreSQL ({first}); is the stack running (vpp up)?") from exc


def upsert_assets(dsn: str, assets: Sequence[Asset]) -> ImportCounts:
    """Insert or update every asset in ONE transaction: all rows are written or none.

    A row identical to the stored one is left alone (no ``updated_at`` churn, no
    change notification). The ``assets`` table must exist (``vpp.db.migrate``).
    """
    rows = [
        (a.device_id, a.site_id, a.region_path, a.timezone, float(a.capacity_wh), float(a.max_charge_w),
         float(a.max_discharge_w), float(a.reserve_pct), bool(a.enrolled_peak_shaving))
        for a in assets
    ]
    if len({r[0] for r in rows}) != len(rows):
        raise UserError("duplicate device_id in the assets to import; each device may appear once")
    inserted = updated = 0
    with _connect(dsn) as conn:  # commits on success, rolls back on any exception
        with conn.cursor() as cur:
            if rows:
                cur.executemany(_UPSERT, rows, returning=True)
                while True:
                    for (was_insert,) in cur.fetchall():
                        if was_insert:
                            inserted += 1
                        else:
                            updated += 1
                    if not cur.nextset():
                        break
    return ImportCounts(inserted=inserted, updated=updated, unchanged=len(rows) - inserted - updated)


def list_assets(dsn: str, prefix: str | None = None) -> list[Asset]:
    """Assets whose site path is ``prefix`` or lies below it (or whose leaf is ``prefix``), by path."""
    query = f"SELECT {_COLUMNS_SQL} FROM assets"
    params: tuple = ()
    p = (prefix or "").strip().strip("/")
    if p:
        query += (
            " WHERE region_path = %s OR left(region_path, length(%s) + 1) = %s || '/'"
            " OR region_path || '/' || device_id = %s"
        )
        params = (p, p, p, p)
    query += " ORDER BY region_path, device_id"
    with _connect(dsn) as conn:
        rows = conn.execute(query, params).fetchall()
    return [Asset(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]


def import_assets_file(dsn: str, path: str | os.PathLike[str]) -> ImportCounts:
    """Validate the whole file first, then migrate and upsert it in one transaction."""
    from vpp.db import migrate

    import psycopg

    assets = parse_assets_csv(Path(path))
    try:
        migrate(dsn)
    except psycopg.Error as exc:  # one line, the CLI's contract
        raise UserError(f"cannot prepare the database ({str(exc).strip().splitlines()[0]}); is the stack running (vpp up)?") from exc
    return upsert_assets(dsn, assets)


# -- CLI -------------------------------------------------------------------------
