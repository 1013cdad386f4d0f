"""A fixed asset registry for replays: the interface of ``sinks.asset_cache.AssetCache`` over a CSV file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from vpp.assets import Asset, load_assets_csv

__all__ = ["StaticAssets", "static_assets"]


class StaticAssets:
    """``assets`` never changes (``generation`` stays 0); ``refresh_if_due`` has nothing to do."""

    def __init__(self, assets: Mapping[str, Asset]):
        self.assets = dict(assets)
        self.generation = 0

    def refresh_if_due(self, *, missing: bool = False) -> int:
        return 0


def static_assets(csv_path: str | os.PathLike[str]) -> StaticAssets:
    """The registry of an assets CSV (spec telemetry.md section 5), as replays enrich with it."""
    return StaticAssets(load_assets_csv(Path(csv_path)))
