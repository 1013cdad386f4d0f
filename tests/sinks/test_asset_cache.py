"""The enrichment cache picks up new and moved devices without a restart (polling the registry)."""

from __future__ import annotations

import time

from psycopg.conninfo import make_conninfo

from vpp.assets import asset_from_row
from sinks.asset_cache import AssetCache
from sinks.asset_registry import upsert_assets
from vpp.assets import parse_assets_csv

HEADER = "device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct\n"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_new_and_moved_devices_are_seen_on_the_next_refresh(isolated_settings):
    dsn = isolated_settings.postgres_dsn
    upsert_assets(dsn, parse_assets_csv(HEADER + "pw-1,site-1,us/ca/a/1/site-1,America/Los_Angeles,13500,5000,5000,10\n"))
    clock = FakeClock()
    cache = AssetCache(dsn, asset_from_row, refresh_s=5.0, miss_refresh_s=1.0, clock=clock)
    assert cache.refresh_if_due() == 1
    assert cache.assets["pw-1"].region_path == "us/ca/a/1/site-1"

    upsert_assets(dsn, parse_assets_csv(HEADER + "pw-1,site-2,us/ca/b/2/site-2,America/Los_Angeles,13500,5000,5000,10\n"
                                                 "pw-2,site-3,us/ny/c/3/site-3,America/New_York,10000,4000,4000,20\n"))
    clock.now = 0.5  # before the interval: only the change's NOTIFY (assets_changed) makes it refresh
    deadline = time.monotonic() + 5
    while cache.refresh_if_due() == 0 and time.monotonic() < deadline:  # the notification is on its way
        time.sleep(0.01)
    assert cache.assets["pw-1"].region_path == "us/ca/b/2/site-2"  # moved
    assert cache.assets["pw-2"].timezone == "America/New_York"  # joined
    clock.now = 1.0
    assert cache.refresh_if_due(missing=True) == 0  # no change since, and a miss refreshes at most once a second
    clock.now = 3.0
    assert cache.refresh_if_due() == 0  # not due yet: no query
    clock.now = 7.0
    cache.refresh_if_due()
    assert set(cache.assets) == {"pw-1", "pw-2"}


def test_a_registry_outage_keeps_the_cached_assets(isolated_settings):
    dsn = isolated_settings.postgres_dsn
    upsert_assets(dsn, parse_assets_csv(HEADER + "pw-1,site-1,us/ca/a/1/site-1,America/Los_Angeles,13500,5000,5000,10\n"))
    cache = AssetCache(dsn, asset_from_row)
    cache.refresh()
    cache._dsn = make_conninfo(dsn, dbname="no_such_database")
    cache._conn.close()
    assert cache.refresh() == 0
    assert "pw-1" in cache.assets
