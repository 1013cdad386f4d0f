"""A fixed asset registry for replays: the interface of ``sinks.asset_cache.AssetCache`` over a file or a database.

``replay_assets(source)``: an assets CSV (spec telemetry.md section 5, or ``vpp assets export --at``) is one
registry for every reading; a registry history (``vpp assets export --history``) or a PostgreSQL DSN (its
``asset_versions``) is the registry through time: each reading is enriched with the version valid at its
timestamp (``vpp.asset_versions_csv.AssetTimeline.as_of``), as live enrichment saw it then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from vpp.assets import Asset, load_assets_csv
from vpp.asset_versions_csv import VERSION_CSV_COLUMNS, AssetTimeline, read_versions_csv
from vpp.errors import UserError

__all__ = ["StaticAssets", "static_assets", "replay_assets", "is_dsn"]


class StaticAssets:
    """``assets`` never changes (``generation`` stays 0); ``refresh_if_due`` has nothing to do."""

    def __init__(self, assets: Mapping[str, Asset]):
        self.assets = dict(assets)
        self.generation = 0

    def refresh_if_due(self, *, missing: bool = False) -> int:
        return 0


def is_dsn(source: str | os.PathLike[str]) -> bool:
    text = str(source)
    return text.startswith(("postgres://", "postgresql://")) or ("dbname=" in text and not Path(text).exists())


def replay_assets(source: str | os.PathLike[str]) -> StaticAssets | AssetTimeline:
    """The registry a replay enriches with (see the module's docstring)."""
    if is_dsn(source):
        from sinks.asset_history import versions

        return AssetTimeline.from_rows(versions(str(source)))
    path = Path(source)
    if not path.exists():
        raise UserError(f"assets file {path} does not exist")
    with open(path, encoding="utf-8-sig") as fh:
        header = fh.readline().strip()
    if header == ",".join(VERSION_CSV_COLUMNS):
        return read_versions_csv(path)
    return StaticAssets(load_assets_csv(path))


def static_assets(csv_path: str | os.PathLike[str]) -> StaticAssets | AssetTimeline:
    """The registry of an assets CSV (or of any source ``replay_assets`` reads), as replays enrich with it."""
    return replay_assets(csv_path)
