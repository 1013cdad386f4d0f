"""The asset registry: which devices exist, where they sit in the fleet tree, what they can do.

The import format is the CSV of spec/telemetry.md section 5::

    device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct

plus an optional ``enrolled_peak_shaving`` column (``true``/``false``,
``1``/``0``, ``yes``/``no``; absent or empty means enrolled, the table's
default) and an optional ``programs`` column (``market;peak_shaving:20``:
program enrollments with the reserve each holds, ``vpp.asset_lifecycle``); the
flag alone means "market, and peak shaving unless false". ``parse_assets_csv`` validates a whole file and reports every bad
row by its line number (the header is line 1); nothing is written unless the
whole file is valid. ``upsert_assets`` writes in one transaction, so an import
is all or nothing; a device whose row changed (it moved to another site, got a
new battery) is updated in place.

``load_assets_csv`` reads the same file for replay, where no database runs.
The registry in PostgreSQL is ``sinks.asset_registry``; the CLI is ``cli.assets``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vpp.asset_lifecycle import (Enrollment, default_enrollments, enrollments_from_json, parse_programs_cell,
                                 programs_cell)
from vpp.errors import UserError

__all__ = [
    "Asset",
    "AssetsCsvError",
    "ImportCounts",
    "CSV_COLUMNS",
    "OPTIONAL_COLUMNS",
    "DEVICE_ID_PATTERN",
    "parse_assets_csv",
    "load_assets_csv",
    "assets_to_csv",
    "write_assets_csv",
    "format_number",
    "asset_from_row",
]

#: Required columns, in the order we write them (spec section 5).
CSV_COLUMNS = (
    "device_id",
    "site_id",
    "region_path",
    "timezone",
    "capacity_wh",
    "max_charge_w",
    "max_discharge_w",
    "reserve_pct",
)
OPTIONAL_COLUMNS = ("enrolled_peak_shaving", "programs")
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_MAX_ERRORS_SHOWN = 20
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True, slots=True)
class Asset:
    """One device of the registry (one version of it); ``region_path`` runs from the root to its site."""

    device_id: str
    site_id: str
    region_path: str
    timezone: str
    capacity_wh: float | None = None  # None: a rating the registry does not know (enrichment leaves it out)
    max_charge_w: float | None = None
    max_discharge_w: float | None = None
    reserve_pct: float | None = None
    enrolled_peak_shaving: bool = True
    status: str = "active"  # vpp.asset_lifecycle.STATUSES
    programs: tuple[Enrollment, ...] | None = None  # None: what the flag says (vpp.asset_lifecycle.default_enrollments)
    replaces: str | None = None  # the device this one replaced on its site

    @property
    def enrollments(self) -> tuple[Enrollment, ...]:
        return self.programs if self.programs is not None else enrollments_from_json(None, self.enrolled_peak_shaving)

    def enrolled_in(self, program: str, ts_ms: int) -> bool:
        return any(e.program == program and e.covers(ts_ms) for e in self.enrollments)

    def same_as(self, other: "Asset | None") -> bool:
        """Equal as a registry entry (programs given explicitly or by the flag alike)."""
        return other is not None and replace(self, programs=self.enrollments) == replace(other, programs=other.enrollments)

    @property
    def node_path(self) -> str:
        """The device's leaf in the fleet tree: ``<site path>/<device_id>``."""
        return f"{self.region_path}/{self.device_id}"


@dataclass(frozen=True)
class ImportCounts:
    """What an upsert did: rows new, changed, and already identical."""

    inserted: int
    updated: int
    unchanged: int
    #: the ``fleet.events`` records of the import (device_registered, device_moved), for the caller to publish
    events: tuple = field(default=(), compare=False, repr=False)

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


class AssetsCsvError(UserError):
    """The asset CSV has bad rows; ``problems`` holds ``(line, message)`` pairs."""

    def __init__(self, source: str, problems: Sequence[tuple[int, str]]):
        self.source = source
        self.problems = list(problems)
        shown = "; ".join(f"line {line}: {msg}" for line, msg in self.problems[:_MAX_ERRORS_SHOWN])
        more = len(self.problems) - _MAX_ERRORS_SHOWN
        tail = f"; and {more} more" if more > 0 else ""
        super().__init__(
            f"{source}: {len(self.problems)} invalid row(s), nothing imported: {shown}{tail}. "
            "Fix these lines and import again."
        )

    @property
    def lines(self) -> list[int]:
        return [line for line, _ in self.problems]


# -- parsing -------------------------------------------------------------------


def parse_assets_csv(text_or_path: str | os.PathLike[str]) -> list[Asset]:
    """Parse and validate an asset CSV given as its text or as a path.

    A ``str`` containing a newline or a comma is taken as CSV text, any other
    ``str`` or ``PathLike`` as a file path. Raises ``AssetsCsvError`` naming
    every bad line; returns the assets in file order.
    """
    if isinstance(text_or_path, str) and ("\n" in text_or_path or "," in text_or_path):
        return _parse(text_or_path, "<csv text>")
    path = Path(text_or_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"asset file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read asset file {path}: {exc}") from exc
    return _parse(text, str(path))


def load_assets_csv(path: str | os.PathLike[str]) -> dict[str, Asset]:
    """The registry from a CSV file, keyed by device_id (for replay without a database)."""
    return {a.device_id: a for a in parse_assets_csv(Path(path))}


def _parse(text: str, source: str) -> list[Asset]:
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise AssetsCsvError(source, [(1, "empty file: expected the header " + ",".join(CSV_COLUMNS))]) from None
    parts = [f"{what} column(s) {', '.join(cols)}" for what, cols in (
        ("missing", [c for c in CSV_COLUMNS if c not in header]),
        ("unknown", [c for c in header if c not in CSV_COLUMNS + OPTIONAL_COLUMNS]),
        ("repeated", sorted({c for c in header if header.count(c) > 1})),
    ) if cols]
    if parts:
        raise AssetsCsvError(source, [(1, "bad header: " + "; ".join(parts) + f"; expected {','.join(CSV_COLUMNS)}")])
    index = {name: i for i, name in enumerate(header)}
    assets: list[Asset] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    rows = iter(reader)
    while True:
        try:
            row = next(rows, None)
        except csv.Error as exc:  # a NUL byte, an unterminated quote at the end, a huge field
            problems.append((reader.line_num, f"unreadable CSV: {exc}"))
            break
        if row is None:
            break
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append((line, f"expected {len(header)} fields, found {len(row)}"))
            continue
        asset, errors = _parse_row({name: row[i].strip() for name, i in index.items()})
        if errors:
            problems.append((line, "; ".join(errors)))
            continue
        assert asset is not None
        if asset.device_id in first_line:
            problems.append((line, f"duplicate device_id {asset.device_id!r} (first on line {first_line[asset.device_id]})"))
            continue
        first_line[asset.device_id] = line
        assets.append(asset)
    if problems:
        raise AssetsCsvError(source, problems)
    return assets


def _number(cells: dict[str, str], name: str, errors: list[str], *, positive: bool = False, upper: float | None = None) -> float:
    raw = cells[name]
    try:
        value = float(raw)
    except ValueError:
        errors.append(f"{name} {raw!r} is not a number")
        return 0.0
    if not math.isfinite(value):
        errors.append(f"{name} {raw!r} is not a finite number")
    elif positive and value <= 0:
        errors.append(f"{name} {raw!r} must be greater than 0")
    elif value < 0:
        errors.append(f"{name} {raw!r} must not be negative")
    elif upper is not None and value > upper:
        errors.append(f"{name} {raw!r} must be at most {upper:g}")
    return value


def _valid_timezone(name: str) -> bool:
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _parse_row(cells: dict[str, str]) -> tuple[Asset | None, list[str]]:
    errors: list[str] = []
    device_id, site_id, region_path, tz = cells["device_id"], cells["site_id"], cells["region_path"], cells["timezone"]
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        errors.append(f"device_id {device_id!r} must be 1-64 characters of [A-Za-z0-9._:-]")
    if not DEVICE_ID_PATTERN.fullmatch(site_id):
        errors.append(f"site_id {site_id!r} must be 1-64 characters of [A-Za-z0-9._:-]")
    segments = region_path.split("/")
    if not region_path or any(not s for s in segments):
        errors.append(f"region_path {region_path!r} must be '/'-separated non-empty names, e.g. us/ca/pge/94110/site-0042")
    elif segments[-1] != site_id:
        errors.append(f"region_path {region_path!r} must end with its site_id {site_id!r}")
    if not _valid_timezone(tz):
        errors.append(f"timezone {tz!r} is not a known IANA time zone (e.g. America/Los_Angeles)")
    capacity_wh = _number(cells, "capacity_wh", errors, positive=True)
    max_charge_w = _number(cells, "max_charge_w", errors)
    max_discharge_w = _number(cells, "max_discharge_w", errors)
    reserve_pct = _number(cells, "reserve_pct", errors, upper=100.0)
    enrolled = True
    raw_enrolled = cells.get("enrolled_peak_shaving", "").lower()
    if raw_enrolled in _FALSE:
        enrolled = False
    elif raw_enrolled and raw_enrolled not in _TRUE:
        errors.append(f"enrolled_peak_shaving {cells['enrolled_peak_shaving']!r} must be true or false")
    programs, program_errors = parse_programs_cell(cells.get("programs", ""))
    errors.extend(program_errors)
    if programs is not None:
        in_peak_shaving = any(e.program == "peak_shaving" for e in programs)
        if raw_enrolled and in_peak_shaving != enrolled:
            errors.append(f"enrolled_peak_shaving {cells['enrolled_peak_shaving']!r} contradicts programs "
                          f"{cells['programs']!r}; give one of them")
        enrolled = in_peak_shaving
        if programs == enrollments_from_json(None, enrolled):
            programs = None  # what the flag says anyway: one form of the same asset
    if errors:
        return None, errors
    return (
        Asset(device_id, site_id, region_path, tz, capacity_wh, max_charge_w, max_discharge_w, reserve_pct, enrolled,
              programs=programs),
        [],
    )


# -- writing -------------------------------------------------------------------


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def assets_to_csv(assets: Iterable[Asset], *, with_enrollment: bool = True) -> str:
    """The CSV text of the import format (optional enrollment column last; the ``programs`` column only when
    some asset's programs say more than its ``enrolled_peak_shaving`` flag: the older format otherwise)."""
    assets = list(assets)
    with_programs = with_enrollment and any(a.programs is not None for a in assets)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + (OPTIONAL_COLUMNS[: 1 + with_programs] if with_enrollment else ()))
    for a in assets:
        row = [a.device_id, a.site_id, a.region_path, a.timezone, format_number(a.capacity_wh), format_number(a.max_charge_w),
               format_number(a.max_discharge_w), format_number(a.reserve_pct)]
        if with_enrollment:
            row.append("true" if a.enrolled_peak_shaving else "false")
        if with_programs:
            row.append(programs_cell(a.enrollments))
        writer.writerow(row)
    return buf.getvalue()


def write_assets_csv(path: str | os.PathLike[str], assets: Iterable[Asset]) -> Path:
    """Write the CSV whole or not at all: into a temporary file beside it, then renamed over it.

    Readers watch for this file (``vpp demo`` loads it as soon as it appears): they must never see
    half of it.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        partial.write_text(assets_to_csv(assets), encoding="utf-8")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


# -- database ------------------------------------------------------------------


def _rating(value: Any) -> float | None:
    return None if value is None else float(value)


def asset_from_row(row: Mapping[str, Any]) -> Asset:
    """An ``Asset`` from a registry row (a database row, or a CSV asset as a dict); extra columns are ignored.

    On the path of a million-device cache load: a few microseconds a row (``bench/assets.py``).
    """
    get = row.get
    enrolled = get("enrolled_peak_shaving")
    enrolled = True if enrolled is None else bool(enrolled)
    programs = get("programs")
    if programs is not None:
        if isinstance(programs, str) and not programs.startswith("["):  # a CSV cell, not a jsonb value (or its text)
            programs = parse_programs_cell(programs)[0]
        else:
            programs = enrollments_from_json(programs)
        if programs is not None and (programs is default_enrollments(enrolled)
                                     or programs == default_enrollments(enrolled)):
            programs = None  # what the flag says anyway: one form of the same asset
    return Asset(row["device_id"], row["site_id"], row["region_path"], row["timezone"], _rating(get("capacity_wh")),
                 _rating(get("max_charge_w")), _rating(get("max_discharge_w")), _rating(get("reserve_pct")), enrolled,
                 get("status") or "active", programs, get("replaces"))
