"""A worker-local cache of the asset registry (PostgreSQL ``assets`` table) for enrichment.

How it picks up new and moved devices without a restart: polling. Every
``refresh_s`` it reads the rows changed since the newest ``updated_at`` it has
seen (the table's upsert sets ``updated_at = now()``); and a lookup of an
unknown device forces an early refresh, at most once per ``miss_refresh_s``,
so a device registered a moment ago is found on its first reading. Polling
was chosen over LISTEN/NOTIFY because it needs no long-lived connection per
worker and recovers by itself after a database restart; the ``assets_changed``
NOTIFY trigger exists for consumers that prefer it.

Until its first load has succeeded the cache waits for the database (retrying with backoff, one log line
each time) instead of answering "unknown device" for the whole fleet: a flow started while PostgreSQL is
down pauses at its first batch and goes on where it was once the registry answers.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from vpp.errors import redact_dsn

__all__ = ["AssetCache", "ASSET_COLUMNS"]

_log = logging.getLogger(__name__)

ASSET_COLUMNS = ("device_id", "site_id", "region_path", "timezone", "capacity_wh", "max_charge_w",
                 "max_discharge_w", "reserve_pct", "enrolled_peak_shaving")

_CHANGED_SINCE = (
    "SELECT device_id, site_id, region_path, timezone, capacity_wh, max_charge_w, max_discharge_w, "
    "reserve_pct, enrolled_peak_shaving, updated_at FROM assets WHERE updated_at > %s::timestamptz - interval '10 seconds' ORDER BY updated_at"
)


class AssetCache:
    """``cache.assets`` is a plain dict device_id -> asset, refreshed in place by ``refresh_if_due``."""

    def __init__(self, dsn: str, make_asset: Callable[[Mapping[str, Any]], Any], *, refresh_s: float = 5.0,
                 miss_refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self._dsn = dsn
        self._make_asset = make_asset
        self._refresh_s = refresh_s
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._since = "-infinity"
        self._last_refresh = float("-inf")
        self._conn = None
        self.assets: dict[str, Any] = {}
        self.loaded = False
        self._sleep = time.sleep
        self._max_wait_s = 10.0
        #: goes up whenever ``assets`` changes: a consumer that derived something from it knows when to look again
        self.generation = 0

    def _connection(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        return self._conn

    def refresh(self) -> int:
        """Load rows changed since the last refresh; returns how many changed."""
        from psycopg.rows import dict_row

        try:
            with self._connection().cursor(row_factory=dict_row) as cur:
                rows = cur.execute(_CHANGED_SINCE, (self._since,)).fetchall()
        except Exception as exc:  # noqa: BLE001 - keep serving the cached registry; retried next interval
            self._conn = None
            self._last_refresh = self._clock()
            if not self.loaded:
                raise
            _log.warning("asset registry refresh failed, keeping %d cached assets: %s", len(self.assets), exc)
            return 0
        self.loaded = True
        for row in rows:
            self.assets[row["device_id"]] = self._make_asset(row)
            self._since = row["updated_at"]
        if rows:
            self.generation += 1
        self._last_refresh = self._clock()
        return len(rows)

    def wait_for_first_load(self) -> int:
        """Load the registry, waiting with backoff (and saying so) for as long as the database cannot answer."""
        wait_s = 0.5
        while True:
            try:
                return self.refresh()
            except Exception as exc:  # noqa: BLE001 - a dependency that is down: wait for it, never guess
                _log.warning("waiting for the asset registry (PostgreSQL): %s; retrying in %.1f s",
                             redact_dsn(str(exc)), wait_s)
                self._sleep(wait_s)
                wait_s = min(wait_s * 2, self._max_wait_s)

    def refresh_if_due(self, *, missing: bool = False) -> int:
        """Refresh when the interval has passed (or, for a missing device, the shorter one); returns rows changed."""
        if not self.loaded:
            return self.wait_for_first_load()
        elapsed = self._clock() - self._last_refresh
        if elapsed >= self._refresh_s or (missing and elapsed >= self._miss_refresh_s):
            return self.refresh()
        return 0
