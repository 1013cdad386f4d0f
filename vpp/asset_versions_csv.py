"""The registry through time, without a database: every version of every device, and the one valid at a time.

``vpp assets export --history`` writes the versions as CSV (the import columns, then ``status``,
``programs`` as JSON with their effective dates, ``replaces``, ``valid_from_ms``, ``valid_to_ms``: empty
for the current version); ``AssetTimeline`` answers "which version of this device was valid at t"
(``as_of``), which a replay with ``--assets-at`` enriches each reading with.
"""

from __future__ import annotations

import bisect
import csv
import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson

from vpp.asset_lifecycle import enrollments_from_json
from vpp.assets import CSV_COLUMNS, Asset, asset_from_row, format_number
from vpp.errors import UserError

__all__ = ["VERSION_CSV_COLUMNS", "versions_to_csv", "AssetTimeline", "read_versions_csv"]

VERSION_CSV_COLUMNS = CSV_COLUMNS + ("enrolled_peak_shaving", "status", "programs", "replaces", "valid_from_ms",
                                     "valid_to_ms")


def _ms(t: Any) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def versions_to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV of version rows (``sinks.asset_history.versions``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(VERSION_CSV_COLUMNS)
    for r in rows:
        valid_to = _ms(r["valid_to"])
        writer.writerow([r["device_id"], r["site_id"], r["region_path"], r["timezone"]]
                        + [format_number(r[c]) for c in CSV_COLUMNS[4:]]
                        + ["true" if r["enrolled_peak_shaving"] else "false", r["status"],
                           orjson.dumps(r["programs"]).decode(), r["replaces"] or "", _ms(r["valid_from"]),
                           "" if valid_to is None else valid_to])
    return buf.getvalue()


class AssetTimeline:
    """Versions per device, by ``valid_from``; ``assets`` (device -> its latest live version) is the interface of
    the flows' cache, ``as_of(device, ts_ms)`` the version valid then (None: not registered, or decommissioned)."""

    def __init__(self, versions: Iterable[tuple[Asset, int, int | None]]):
        by_device: dict[str, list[tuple[int, int | None, Asset]]] = {}
        for asset, valid_from, valid_to in versions:
            by_device.setdefault(asset.device_id, []).append((valid_from, valid_to, asset))
        self._starts: dict[str, list[int]] = {}
        self._versions: dict[str, list[tuple[int, int | None, Asset]]] = {}
        self.assets = _AsOfAssets(self)
        for device_id, items in by_device.items():
            items.sort(key=lambda v: v[0])
            self._versions[device_id] = items
            self._starts[device_id] = [v[0] for v in items]
            live = [v[2] for v in items if v[2].status != "decommissioned"]
            if live:
                self.assets[device_id] = live[-1]
        self.generation = 0
        self.removed: dict[str, Asset] = {}

    def as_of(self, device_id: str, ts_ms: int) -> Asset | None:
        starts = self._starts.get(device_id)
        if not starts:
            return None
        i = bisect.bisect_right(starts, ts_ms) - 1
        if i < 0:
            return None
        _, valid_to, asset = self._versions[device_id][i]
        if (valid_to is not None and ts_ms >= valid_to) or asset.status == "decommissioned":
            return None
        return asset

    def refresh_if_due(self, *, missing: bool = False) -> int:
        return 0

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> "AssetTimeline":
        """From database version rows (``sinks.asset_history.versions``)."""
        return cls((asset_from_row(r), _ms(r["valid_from"]), _ms(r["valid_to"])) for r in rows)


class _AsOfAssets(dict):
    """The latest live version per device (what ``in`` and ``get`` answer), and ``as_of``: enrichment looks the
    device up in this mapping (the flows' ``registry.assets``) and asks it for the version of the reading's time."""

    def __init__(self, timeline: AssetTimeline):
        super().__init__()
        self.as_of = timeline.as_of


def read_versions_csv(path: str | os.PathLike[str]) -> AssetTimeline:
    """An ``AssetTimeline`` from ``vpp assets export --history``; a UserError names a bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read the registry history {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != VERSION_CSV_COLUMNS:
        raise UserError(f"{path}: not a registry history (vpp assets export --history): its header must be "
                        + ",".join(VERSION_CSV_COLUMNS))
    out = []
    for row in reader:
        try:
            programs = enrollments_from_json(orjson.loads(row["programs"]))
            asset = asset_from_row({**row, "capacity_wh": row["capacity_wh"], "programs": None,
                                    "enrolled_peak_shaving": row["enrolled_peak_shaving"] == "true",
                                    "replaces": row["replaces"] or None})
            out.append((replace(asset, programs=programs), int(row["valid_from_ms"]),
                        int(row["valid_to_ms"]) if row["valid_to_ms"] else None))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise UserError(f"{path}: line {reader.line_num}: {exc}") from None
    return AssetTimeline(out)
