"""The operations on a device, shared by ``vpp assets ...`` and ``/api/assets``: add, update, move, enroll,
unenroll, suspend, activate, commission, decommission. Each is one versioned, audited transaction
(``sinks.asset_registry.change_assets``) and then its events on ``fleet.events``.

``OPERATIONS`` maps an operation's name to what it makes of a device given its parameters (pure; a
UserError says why it is refused). ``apply_operation`` runs one and publishes the events; when the
broker does not take them the change stays recorded and the error says so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from sinks.asset_registry import ChangeResult, change_assets
from vpp.asset_lifecycle import check_transition, enroll, unenroll
from vpp.assets import CSV_COLUMNS, Asset, asset_from_row, parse_assets_csv
from vpp.errors import UserError

__all__ = ["OPERATIONS", "apply_operation", "new_asset"]

_RATINGS = ("timezone", "capacity_wh", "max_charge_w", "max_discharge_w", "reserve_pct")


def new_asset(device_id: str, params: Mapping[str, Any]) -> Asset:
    """A device to register, validated as an import row is (the same rules, the same messages)."""
    missing = [c for c in CSV_COLUMNS[1:] if params.get(c) in (None, "")]
    if missing:
        raise UserError(f"device {device_id!r}: {', '.join(missing)} required")
    row = ",".join(str(params[c]) if c != "device_id" else device_id for c in CSV_COLUMNS)
    try:
        asset = parse_assets_csv(",".join(CSV_COLUMNS) + "\n" + row + "\n")[0]
    except UserError as exc:
        raise UserError(str(exc).replace("<csv text>: 1 invalid row(s), nothing imported: line 2: ", "")
                        .replace(" Fix these lines and import again.", "")) from None
    return replace(asset, status=str(params.get("status") or "registered"), replaces=params.get("replaces") or None)


def _add(device_id: str, old: Asset | None, at_ms: int, params: Mapping[str, Any]) -> Asset:
    if old is not None:
        raise UserError(f"device {device_id!r} is already registered ({old.status}, at {old.node_path}); "
                        "use vpp assets update or move")
    new = new_asset(device_id, params)
    if new.status not in ("registered", "commissioned", "active"):
        raise UserError(f"a new device starts registered, commissioned or active, not {new.status}")
    return new


def _update(device_id: str, old: Asset, at_ms: int, params: Mapping[str, Any]) -> Asset:
    _alive(old)
    changes = {k: params[k] for k in _RATINGS if params.get(k) is not None}
    status = params.get("status")
    if status:
        check_transition(device_id, old.status, status)
        if status == "decommissioned":
            raise UserError("use vpp assets decommission (it revokes the certificates and needs a reason)")
        changes["status"] = status
    if not changes:
        raise UserError("nothing to update: give at least one of --timezone, --capacity-wh, --max-charge-w, "
                        "--max-discharge-w, --reserve-pct, --status")
    row = {**_as_row(old), **changes}
    checked = new_asset(device_id, row)  # the import's rules on the changed row
    return replace(old, **{k: getattr(checked, k) for k in _RATINGS}, status=row["status"])


def _move(device_id: str, old: Asset, at_ms: int, params: Mapping[str, Any]) -> Asset:
    _alive(old)
    region_path = str(params.get("region_path") or "").strip().strip("/")
    site_id = region_path.rsplit("/", 1)[-1]
    checked = new_asset(device_id, {**_as_row(old), "region_path": region_path, "site_id": site_id})
    if checked.region_path == old.region_path:
        raise UserError(f"device {device_id!r} is at {old.region_path} already")
    return replace(old, site_id=checked.site_id, region_path=checked.region_path)


def _enroll(device_id: str, old: Asset, at_ms: int, params: Mapping[str, Any]) -> Asset:
    _alive(old)
    program = str(params.get("program") or "")
    programs = enroll(old.enrollments, program, reserve_pct=float(params.get("reserve_pct") or 0.0),
                      from_ms=int(params.get("from_ms") or at_ms), to_ms=params.get("to_ms"))
    return replace(old, programs=programs, enrolled_peak_shaving=_in(programs, "peak_shaving", at_ms))


def _unenroll(device_id: str, old: Asset, at_ms: int, params: Mapping[str, Any]) -> Asset:
    _alive(old)
    programs = unenroll(device_id, old.enrollments, str(params.get("program") or ""), at_ms=at_ms)
    return replace(old, programs=programs, enrolled_peak_shaving=_in(programs, "peak_shaving", at_ms))


def _status(status: str) -> Callable[[str, Asset, int, Mapping[str, Any]], Asset]:
    def change(device_id: str, old: Asset, at_ms: int, params: Mapping[str, Any]) -> Asset:
        check_transition(device_id, old.status, status)
        if old.status == status:
            raise UserError(f"device {device_id!r} is {status} already")
        return replace(old, status=status)

    return change


def _in(programs, program: str, at_ms: int) -> bool:
    return any(e.program == program and e.covers(at_ms) for e in programs)


def _alive(old: Asset) -> None:
    if old.status == "decommissioned":
        raise UserError(f"device {old.device_id!r} is decommissioned: it cannot change any more (its history stays)")


def _as_row(a: Asset) -> dict[str, Any]:
    return {"site_id": a.site_id, "region_path": a.region_path, "timezone": a.timezone, "capacity_wh": a.capacity_wh,
            "max_charge_w": a.max_charge_w, "max_discharge_w": a.max_discharge_w, "reserve_pct": a.reserve_pct,
            "status": a.status, "replaces": a.replaces}


#: operation -> (device, its current asset or None, the change's time, parameters) -> the new asset
OPERATIONS: dict[str, Callable[[str, Any, int, Mapping[str, Any]], Asset]] = {
    "add": _add,
    "update": _update,
    "move": _move,
    "enroll": _enroll,
    "unenroll": _unenroll,
    "commission": _status("commissioned"),
    "activate": _status("active"),
    "suspend": _status("suspended"),
    "decommission": _status("decommissioned"),
}


def apply_operation(settings, operation: str, device_id: str, params: Mapping[str, Any], *, changed_by: str,
                    reason: str = "", at_ms: int | None = None, address: str | None = "cli",
                    publish: bool = True) -> ChangeResult:
    """Run one operation on one device (versioned, audited when ``address`` is given), then publish its events."""
    op = OPERATIONS.get(operation)
    if op is None:
        raise UserError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
    if operation == "decommission" and not reason:
        raise UserError("decommissioning needs a reason (--reason TEXT): it is kept in the device's history")
    if operation == "add" and params.get("replaces"):
        _check_replacement(settings.postgres_dsn, device_id, params)
    result = change_assets(settings.postgres_dsn, [device_id], lambda d, old, at: op(d, old, at, params),
                           changed_by=changed_by, reason=reason, at_ms=at_ms, action=f"assets {operation}",
                           address=address, require_existing=operation != "add")
    if publish and result.events:
        from sinks.fleet_events import publish_events

        try:
            publish_events(settings, result.events)
        except UserError as exc:
            raise UserError(f"the change is recorded, but its events were not published: {exc}") from None
    return result


def _check_replacement(dsn: str, device_id: str, params: Mapping[str, Any]) -> None:
    """A replacement names a known device of the same site (the site's history stays linked through it)."""
    from sinks.asset_history import versions

    old = versions(dsn, [str(params["replaces"])])
    if not old:
        raise UserError(f"device {device_id!r} cannot replace {params['replaces']!r}: no such device was ever registered")
    last = asset_from_row(old[-1])
    if last.site_id != str(params.get("site_id")):
        raise UserError(f"device {device_id!r} cannot replace {last.device_id!r}: that one is at site {last.site_id!r}, "
                        f"not {params.get('site_id')!r} (move it first, or register the new device there)")
