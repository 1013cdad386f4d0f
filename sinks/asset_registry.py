"""The asset registry in PostgreSQL: every change in one transaction, versioned, audited, with its events.

``assets`` is the current table (what the flows load); the ``assets_version`` trigger of migration
``100_asset_versions`` writes each insert or change as a version in ``asset_versions`` in the same
transaction, with who (``vpp.changed_by``), why (``vpp.reason``) and since when (``vpp.valid_from``: now, or
an earlier time an operator records a change at, never before the device's current version).

``change_assets`` is the one writer: it locks the devices' rows, asks a pure function what each becomes
(``vpp.asset_lifecycle`` says which changes are legal), writes them, revokes the certificates of devices
decommissioned, appends to the audit log, and returns the ``fleet.events`` records for the caller to publish
(``sinks.fleet_events``). All or nothing: one refused device refuses the whole change. Reads (list, history,
as of a time) are ``sinks.asset_history``; the types and CSV format are ``vpp.assets``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from vpp.asset_lifecycle import change_events, enroll, enrollments_to_json, unenroll
from vpp.assets import Asset, ImportCounts, asset_from_row, parse_assets_csv
from vpp.errors import UserError

__all__ = ["ChangeResult", "change_assets", "upsert_assets", "import_assets_file", "connect_registry",
           "REGISTRY_COLUMNS", "import_change", "list_assets"]

REGISTRY_COLUMNS = ("device_id", "site_id", "region_path", "timezone", "capacity_wh", "max_charge_w",
                    "max_discharge_w", "reserve_pct", "enrolled_peak_shaving", "status", "programs", "replaces")
_TYPES = ("text", "text", "text", "text", "float8", "float8", "float8", "float8", "bool", "text", "text", "text")
# one statement per chunk of devices (arrays unnested), not one per device: an import of 100,000 devices is a few
# statements; programs travel as JSON text, cast to jsonb in the statement
_UPSERT = f"""
INSERT INTO assets ({', '.join(REGISTRY_COLUMNS)}, updated_at)
SELECT {', '.join(f'u.{c}::jsonb' if c == 'programs' else f'u.{c}' for c in REGISTRY_COLUMNS)}, clock_timestamp()
FROM unnest({', '.join(f'%s::{t}[]' for t in _TYPES)}) AS u({', '.join(REGISTRY_COLUMNS)})
ON CONFLICT (device_id) DO UPDATE SET
    {', '.join(f'{c} = EXCLUDED.{c}' for c in REGISTRY_COLUMNS[1:])}, updated_at = clock_timestamp()
"""
_CHUNK = 20_000
_SELECT = (f"SELECT a.{', a.'.join(REGISTRY_COLUMNS)}, v.valid_from FROM assets a "
           "LEFT JOIN asset_versions v ON v.device_id = a.device_id AND v.valid_to IS NULL "
           "WHERE a.device_id = ANY(%s) FOR UPDATE OF a")

#: (device_id, its current asset or None, the change's time in epoch ms) -> its new asset (or the same one)
Change = Callable[[str, Asset | None, int], Asset]


@dataclass
class ChangeResult:
    """What a change did: per device its asset before and after; the events to publish; certificates revoked."""

    at_ms: int
    before: dict[str, Asset | None] = field(default_factory=dict)
    after: dict[str, Asset] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        return [d for d, a in self.after.items() if not a.same_as(self.before.get(d))]


def connect_registry(dsn: str, **kwargs):
    import psycopg

    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot connect to PostgreSQL ({first}); is the stack running (vpp up)?") from exc


def _row(a: Asset) -> tuple:
    return (a.device_id, a.site_id, a.region_path, a.timezone, float(a.capacity_wh), float(a.max_charge_w),
            float(a.max_discharge_w), float(a.reserve_pct), bool(a.enrolled_peak_shaving), a.status,
            json.dumps(enrollments_to_json(a.enrollments)), a.replaces)


def _write(conn, assets: list[Asset]) -> None:
    for i in range(0, len(assets), _CHUNK):
        columns = [list(c) for c in zip(*map(_row, assets[i:i + _CHUNK]))]
        conn.execute(_UPSERT, columns)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def change_assets(dsn: str, device_ids: Sequence[str], change: Change, *, changed_by: str, reason: str = "",
                  at_ms: int | None = None, action: str = "assets change", address: str | None = "cli",
                  require_existing: bool = True) -> ChangeResult:
    """Apply ``change`` to each device in ONE transaction; UserError (nothing written) when any is refused.

    ``at_ms``: when the change took effect (default: now); it may not precede a device's current version.
    ``address``: where the change came from, for the audit log (None: the caller audits, as the API does).
    """
    if not changed_by:
        raise UserError("a change needs who made it (--by NAME)")
    ids = list(dict.fromkeys(device_ids))
    with connect_registry(dsn) as conn:  # commits on success, rolls back on any exception
        now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        at = now if at_ms is None else datetime.fromtimestamp(at_ms / 1000, timezone.utc)
        if at > now:
            raise UserError(f"a change cannot take effect in the future ({at.isoformat()}); record it when it happens")
        result = ChangeResult(_ms(at))
        rows = {r[0]: r for r in conn.execute(_SELECT, (ids,)).fetchall()}
        problems: list[str] = []
        for device_id in ids:
            row = rows.get(device_id)
            old = None if row is None else asset_from_row(dict(zip(REGISTRY_COLUMNS, row)))
            if old is None and require_existing:
                problems.append(f"device {device_id!r} is not in the registry (vpp assets add)")
                continue
            if row is not None and row[-1] is not None and at < row[-1]:
                problems.append(f"device {device_id!r}: its current version is valid from {row[-1].isoformat()}; "
                                "a change cannot be dated before it")
                continue
            try:
                new = change(device_id, old, result.at_ms)
            except UserError as exc:
                problems.append(str(exc))
                continue
            result.before[device_id], result.after[device_id] = old, new
        if problems:
            shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            raise UserError(f"nothing changed: {shown}")
        changed = result.changed
        if not changed:
            return result
        conn.execute("SELECT set_config('vpp.changed_by', %s, true), set_config('vpp.reason', %s, true), "
                     "set_config('vpp.valid_from', %s, true)", (changed_by, reason, at.isoformat()))
        _write(conn, [result.after[d] for d in changed])
        gone = [d for d in changed if result.after[d].status == "decommissioned"]
        if gone:
            from sinks.certificates import revoke

            for device_id in gone:
                result.revoked += [c.serial for c in revoke(conn, device_id, f"decommissioned: {reason}".rstrip(": "))]
        for d in changed:
            result.events += change_events(result.before[d], result.after[d], result.at_ms, changed_by=changed_by,
                                           reason=reason)
        if address is not None:
            from psycopg.types.json import Jsonb

            target = changed[0] if len(changed) == 1 else f"{len(changed)} devices"
            conn.execute("INSERT INTO audit_log (actor, action, target, address, outcome, detail) "
                         "VALUES (%s, %s, %s, %s, 'ok', %s)",
                         (changed_by, action, target, address,
                          Jsonb({"devices": changed[:100], "reason": reason, "valid_from": at.isoformat(),
                                 "certificates_revoked": result.revoked})))
    return result


# -- import: the CSV, all or nothing ------------------------------------------------------------------------

def import_change(assets: Sequence[Asset]) -> Change:
    """What an imported row makes of a device: a new device is ``active`` (an import registers a fleet in
    service); a known one keeps its status and history links, takes the row's place and ratings, and its
    programs (the row's ``programs`` cell; without it, the old ``enrolled_peak_shaving`` flag enrolls it in
    peak shaving from now, or ends that enrollment now). A decommissioned device cannot come back."""
    by_id = {a.device_id: a for a in assets}

    def change(device_id: str, old: Asset | None, at_ms: int) -> Asset:
        new = by_id[device_id]
        if old is None:
            return new
        if old.status == "decommissioned":
            raise UserError(f"device {device_id!r} is decommissioned: its id is not reused; register the new "
                            f"device under a new id (vpp assets add NEW --replaces {device_id})")
        programs = new.programs
        if programs is None:
            programs = old.enrollments
            now_in = old.enrolled_in("peak_shaving", at_ms)
            if new.enrolled_peak_shaving and not now_in:
                programs = enroll(programs, "peak_shaving", reserve_pct=0.0, from_ms=at_ms, to_ms=None)
            elif now_in and not new.enrolled_peak_shaving:
                programs = unenroll(device_id, programs, "peak_shaving", at_ms=at_ms)
        merged = replace(new, status=old.status, replaces=old.replaces, programs=programs)
        return old if merged.same_as(old) else merged

    return change


def _import(dsn: str, assets: Sequence[Asset], changed_by: str | None, reason: str,
            address: str | None) -> ImportCounts:
    if len({a.device_id for a in assets}) != len(assets):
        raise UserError("duplicate device_id in the assets to import; each device may appear once")
    if not assets:
        return ImportCounts(0, 0, 0)
    result = change_assets(dsn, [a.device_id for a in assets], import_change(assets),
                           changed_by=changed_by or os.environ.get("USER") or "import", reason=reason,
                           action="assets import", address=address, require_existing=False)
    inserted = sum(1 for d in result.changed if result.before[d] is None)
    updated = len(result.changed) - inserted
    return ImportCounts(inserted, updated, len(assets) - inserted - updated, tuple(result.events))


def upsert_assets(dsn: str, assets: Sequence[Asset], *, changed_by: str | None = None, reason: str = "import",
                  address: str | None = None) -> ImportCounts:
    """Insert or update every asset in ONE transaction: all rows are written or none (see ``import_change``).

    A row identical to the stored one is left alone (no version, no change notification).
    """
    return _import(dsn, assets, changed_by, reason, address)


def import_assets_file(dsn: str, path: str | os.PathLike[str], *, changed_by: str | None = None,
                       reason: str = "") -> ImportCounts:
    """Validate the whole file first, then migrate and apply it in one transaction (audited as from the CLI)."""
    from vpp.db import migrate

    import psycopg

    assets = parse_assets_csv(Path(path))
    try:
        migrate(dsn)
    except psycopg.Error as exc:  # one line, the CLI's contract
        raise UserError(f"cannot prepare the database ({str(exc).strip().splitlines()[0]}); is the stack running (vpp up)?") from exc
    return _import(dsn, assets, changed_by, reason or f"import {Path(path).name}", "cli")


def list_assets(dsn: str, prefix: str | None = None, *, include_decommissioned: bool = False) -> list[Asset]:
    """The current registry (``sinks.asset_history.list_assets``)."""
    from sinks.asset_history import list_assets as current

    return current(dsn, prefix, include_decommissioned=include_decommissioned)
