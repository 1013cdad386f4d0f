"""A worker-local cache of the asset registry (PostgreSQL ``assets`` table) for enrichment.

How it picks up new and moved devices without a restart: polling, hastened by NOTIFY. Every
``refresh_s`` it reads the rows changed since its previous poll began, less 10 s of overlap
(an index on ``updated_at``: cheap with a million devices; every write sets
``updated_at = now()``); a lookup of an unknown device forces an early refresh, at
most once per ``miss_refresh_s``, so a device registered a moment ago is found on
its first reading; and its connection LISTENs on ``assets_changed``, so any call
after a change was committed refreshes at once (a decommissioned device leaves the
flows on the next batch, not after the staleness horizon). Polling stays the
backbone: it recovers by itself after a database restart, when notifications
sent meanwhile are lost.

A row with status ``decommissioned`` is dropped from ``assets`` and kept in
``removed`` (device_id -> its last asset): the aggregate and dispatch flows take
it out of the tree and of every pool at once.

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
                 "max_discharge_w", "reserve_pct", "enrolled_peak_shaving", "status", "programs", "replaces")

_CHANGED_SINCE = (  # programs as text: a million devices share a few sets, looked up by their text, not parsed
    f"SELECT {', '.join(ASSET_COLUMNS).replace('programs', 'programs::text AS programs')}, updated_at FROM assets "
    "WHERE updated_at > %s::timestamptz - interval '10 seconds'"
)
_GONE = "decommissioned"


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
        #: decommissioned devices: device_id -> their last asset (flows drop them from the tree and the pools)
        self.removed: dict[str, Any] = {}
        self.loaded = False
        self._sleep = time.sleep
        self._max_wait_s = 10.0
        #: goes up whenever ``assets`` changes: a consumer that derived something from it knows when to look again
        self.generation = 0

    def _connection(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
            self._conn.execute("LISTEN assets_changed")
        return self._conn

    def _notified(self) -> bool:
        """Whether a change was committed since the last look (never blocks; False without a connection)."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            return any(True for _ in conn.notifies(timeout=0))
        except Exception:  # noqa: BLE001 - a broken connection: the next refresh reconnects
            self._conn = None
            return False

    def refresh(self) -> int:
        """Load rows changed since the last refresh; returns how many changed."""
        from psycopg.rows import dict_row

        self._notified()  # what was notified before this query, the query sees
        try:
            with self._connection().cursor(row_factory=dict_row) as cur:
                # the next poll reads what changed since this one began, less an overlap: a transaction that
                # commits later may have stamped its rows a moment before (anchored on the database's clock,
                # not on the newest row seen: a bulk change would otherwise be re-read at every poll)
                polled_at = cur.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
                cur.execute(_CHANGED_SINCE, (self._since,))
                changed = 0
                while rows := cur.fetchmany(10_000):  # a million-row first load never holds a million dicts
                    changed += self._apply(rows)
        except Exception as exc:  # noqa: BLE001 - keep serving the cached registry; retried next interval
            self._conn = None
            self.generation += 1  # rows applied before the failure are changes too
            self._last_refresh = self._clock()
            if not self.loaded:
                raise
            _log.warning("asset registry refresh failed, keeping %d cached assets: %s", len(self.assets), exc)
            return 0
        self.loaded = True
        self._since = polled_at
        if changed:
            self.generation += 1
        self._last_refresh = self._clock()
        return changed

    def _apply(self, rows) -> int:
        changed = 0
        assets, removed, make = self.assets, self.removed, self._make_asset
        for row in rows:
            device_id = row["device_id"]
            if row.get("status") == _GONE:
                if device_id not in removed:
                    gone = assets.pop(device_id, None)
                    removed[device_id] = make(row) if gone is None else gone
                    changed += 1
                continue
            new = make(row)
            if assets.get(device_id) != new:  # a row read again in the overlap keeps its object (and generation)
                assets[device_id] = new
                removed.pop(device_id, None)
                changed += 1
        return changed

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
        if elapsed >= self._refresh_s or (missing and elapsed >= self._miss_refresh_s) or self._notified():
            return self.refresh()
        return 0
