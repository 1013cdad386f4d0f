"""Benchmark of the asset registry at fleet scale: the flows' cache of a million devices.

    python bench/assets.py [--devices 1000000] [--changes 1000] [--state-dir .vpp]

Needs the local stack (``vpp up``); makes a fresh database (dropped at the end). Phases:

1. registry write: ``--devices`` devices inserted in one statement into ``assets`` (the version trigger writes
   each one's first version into ``asset_versions`` in the same transaction), then stamped an hour old (an
   established registry, outside the cache's 10 s re-read overlap);
2. first load: BASELINE = the cache's own query fetched as plain tuples (the least any loader does); then
   ``sinks.asset_cache.AssetCache.wait_for_first_load`` (rows as dicts, ``vpp.assets.asset_from_row``);
   the ratio cache / baseline, and the process's RSS growth per device;
3. memory per device in the cache, precisely: ``tracemalloc`` over building the assets of a sample of rows;
4. incremental refresh: ``--changes`` devices moved and ``--changes`` decommissioned in one transaction each; the
   time from commit until the cache has them (NOTIFY, then a query by ``updated_at``), and a refresh with
   nothing changed.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_INSERT = """
INSERT INTO assets (device_id, site_id, region_path, timezone, capacity_wh, max_charge_w, max_discharge_w, reserve_pct,
                    enrolled_peak_shaving, programs)
SELECT 'b-' || lpad(i::text, 7, '0'), 'site-' || i, 'us/r' || (i %% 50) || '/f' || (i %% 2000) || '/site-' || i, 'UTC',
       13500, 5000, 5000, 20, i %% 3 <> 0,
       CASE WHEN i %% 3 <> 0 THEN '[{"program": "market"}, {"program": "peak_shaving"}]'::jsonb
            ELSE '[{"program": "market"}]'::jsonb END
FROM generate_series(1, %s) AS i
"""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _wait(predicate, timeout_s: float = 120.0) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError("the cache did not see the change")
        time.sleep(0.001)
    return time.perf_counter() - started


def run(dsn: str, devices: int, changes: int) -> None:
    import psycopg
    from psycopg.rows import dict_row

    from sinks.asset_cache import _CHANGED_SINCE, AssetCache
    from vpp.assets import asset_from_row

    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        conn.execute(_INSERT, (devices,))
    write_s = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE assets DISABLE TRIGGER assets_version")  # an age stamp is not a version
        conn.execute("UPDATE assets SET updated_at = now() - interval '1 hour'")
        conn.execute("ALTER TABLE assets ENABLE TRIGGER assets_version")
        conn.execute("VACUUM ANALYZE assets")
        versions = conn.execute("SELECT count(*) FROM asset_versions").fetchone()[0]
    print(f"registry write: {devices:,} devices ({versions:,} versions) in {write_s:.1f} s "
          f"({devices / write_s:,.0f} devices/s)")

    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(_CHANGED_SINCE, ("-infinity",)).fetchall()
    baseline_s = time.perf_counter() - started
    assert len(rows) == devices
    del rows
    gc.collect()
    rss_before = _rss_bytes()
    cache = AssetCache(dsn, asset_from_row, refresh_s=3600.0)
    started = time.perf_counter()
    cache.wait_for_first_load()
    load_s = time.perf_counter() - started
    gc.collect()
    rss_per_device = (_rss_bytes() - rss_before) / devices
    assert len(cache.assets) == devices
    print(f"first load: baseline (tuples) {baseline_s:.2f} s, cache {load_s:.2f} s "
          f"({devices / load_s:,.0f} devices/s); ratio cache / baseline {load_s / baseline_s:.2f}; "
          f"RSS growth {rss_per_device:.0f} B per device")

    sample = min(devices, 100_000)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        tracemalloc.start()  # the rows' strings become the assets' strings: trace the fetch too, then drop the rows
        sample_rows = cur.execute(_CHANGED_SINCE + f" LIMIT {sample}", ("-infinity",)).fetchall()
    built = {r["device_id"]: asset_from_row(r) for r in sample_rows}
    del sample_rows
    gc.collect()
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"memory per device in the cache: {traced / len(built):.0f} B (tracemalloc, {len(built):,} devices: "
          "the Asset, its strings, the dict entry)")
    del built

    started = time.perf_counter()
    assert cache.refresh() == 0
    idle_s = time.perf_counter() - started
    print(f"refresh with nothing changed: {idle_s * 1000:.1f} ms (index on updated_at)")
    step = max(1, devices // max(changes, 1))
    moved_ids = [f"b-{i:07d}" for i in range(1, devices + 1, step)][:changes]
    gone_ids = [f"b-{i:07d}" for i in range(2, devices + 1, step)][:changes]
    for what, sql, ids, seen in (
        ("moved", "UPDATE assets SET region_path = 'us/moved/' || site_id, updated_at = clock_timestamp() "
                  "WHERE device_id = ANY(%s)", moved_ids,
         lambda: cache.assets[moved_ids[-1]].region_path.startswith("us/moved/")),
        ("decommissioned", "UPDATE assets SET status = 'decommissioned', updated_at = clock_timestamp() "
                           "WHERE device_id = ANY(%s)", gone_ids, lambda: gone_ids[-1] in cache.removed),
    ):
        with psycopg.connect(dsn) as conn:
            started = time.perf_counter()
            conn.execute(sql, (ids,))
        commit_s = time.perf_counter() - started
        seen_s = _wait(lambda: cache.refresh_if_due() >= 0 and seen())
        print(f"incremental refresh: {len(ids):,} devices {what} (one transaction, {commit_s * 1000:.0f} ms with "
              f"their versions); in the cache {seen_s * 1000:.1f} ms after the commit (NOTIFY, then the rows changed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--state-dir", default=os.environ.get("VPP_STATE_DIR", ".vpp"))
    args = parser.parse_args()

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from vpp.config import Settings
    from vpp.db import migrate

    base = Settings.load(state_dir=args.state_dir)
    dbname = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = make_conninfo(base.postgres_dsn, dbname=dbname)
    try:
        migrate(dsn)
        run(dsn, args.devices, args.changes)
    finally:
        with psycopg.connect(base.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


if __name__ == "__main__":
    main()
