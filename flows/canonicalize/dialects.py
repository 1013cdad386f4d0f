"""Per-dialect readers of a raw telemetry payload (spec/telemetry.md section 2).

Each reader takes the envelope's ``payload`` object and the device's registry
entry and returns the reading as measured, already converted to canonical
units and signs (``Measured``) but not yet scrubbed: values may still be
non-finite or out of range; ``canonicalize_logic`` repairs them.  A reader
rejects by raising ``_Reject(reason, detail)``.

How the readers read the parts of the spec that leave room (kept in one place
so that the operator's runbook can quote it):

- Fields are checked in the order the spec's section 2 lists them for the
  dialect (JSON objects are unordered, so "document order" is the spec's),
  with the reading time last. Fields the spec says to ignore (``RSOC``,
  tesla's other ``last_communication_time`` values) are not checked at all.
- A container of a value field (``aggregates.site``, ``soe``, ``models.203``
  ...) that is absent or null makes its values null; one that is not an
  object is ``bad_field:<its path>``.  When a container of the *reading
  time* is absent, the reason names the reading time's full path
  (``missing_field:payload.aggregates.battery.last_communication_time``).
- tesla: the reading time must carry a UTC offset (or ``Z``); without one it
  cannot be placed in time: ``bad_timestamp``.  More than 6 fractional
  digits are truncated before parsing (and the result to milliseconds).
- sonnen: ``Timestamp`` is local wall time in the registry's ``timezone``.
  Ambiguous (clocks go back): the first occurrence (PEP 495 ``fold=0``).
  Non-existent (clocks go forward, e.g. 02:30 on the last Sunday of March in
  Europe/Berlin): read with the offset in force *before* the transition
  (again ``fold=0``), i.e. as a gateway whose clock has not switched yet;
  the reading is kept and flagged ``local_time_gap``.  A Timestamp that does
  carry an explicit offset is honoured.  An unknown registry timezone is a
  ``bad_timestamp`` whose detail says to fix the registry.
- sunspec: a missing or null scale factor makes its value null (a register
  cannot be read without it); a scale factor holding a "not implemented"
  sentinel (-32768 or 65535) likewise.  A scale factor that is not an
  integer in [-10, 10] (SunSpec's ``sunssf`` range) is ``bad_field``; a
  non-finite one (NaN from a lenient gateway) makes the value non-finite, so
  it is nulled and flagged like any other.  A float ``timestamp`` is accepted
  and truncated to milliseconds; a non-finite one is ``bad_timestamp``.
- Integers too large for a float count as infinite (null + ``non_finite``).
"""

from __future__ import annotations

from datetime import tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from flows.canonicalize.timestamps import iso_ms, local_offset_ms, parse_iso

if TYPE_CHECKING:  # pragma: no cover
    from flows.canonicalize.logic import AssetInfo

__all__ = [
    "Measured", "PARSERS", "parse_tesla", "parse_sonnen", "parse_sunspec",
    "iso_ms", "parse_iso", "local_offset_ms", "describe",
]

_INF = float("inf")
_NOT_IMPLEMENTED = (-32768, 65535)
_POW10 = tuple(10.0**i for i in range(11))
_TESLA_ON_GRID = "SystemGridConnected"
_SONNEN_ON_GRID = "OnGrid"


class _Reject(Exception):
    """Internal: a reading fails a check; ``reason`` is a spec reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class Measured(NamedTuple):
    """One reading in canonical units and signs, before scrubbing."""

    ts: int  # epoch milliseconds, UTC, truncated
    soc_pct: float | None
    battery_w: float | None  # > 0 discharging
    solar_w: float | None
    load_w: float | None
    grid_w: float | None  # > 0 importing
    grid_connected: bool | None
    capacity_wh: float | None  # reported; None = use the registry's
    time_flag: str | None  # "local_time_gap" or None


# ---------------------------------------------------------------- helpers


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for a DLQ detail.

    Never ``repr`` of a container: a list nested 1000 deep would recurse.
    ``repr`` escapes lone surrogates, so the detail always encodes as UTF-8.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if type(value) is list:
        return "a list"
    if type(value) is dict:
        return "an object"
    if type(value) is int and not -(10**30) < value < 10**30:
        return "an integer of more than 30 digits"  # repr of a huge int is slow or raises
    return repr(value)


def _bad_type(path: str, value: Any, wanted: str) -> _Reject:
    return _Reject("bad_field:" + path, f"{path} must be {wanted}, got {describe(value)}")


def _obj(container: dict | None, key: str, path: str) -> dict | None:
    """An optional nested object; absent or null (or in an absent container) -> None."""
    if container is None:
        return None
    value = container.get(key)
    if type(value) is dict:
        return value
    if value is None:
        return None
    raise _bad_type(path, value, "an object")


def _num(container: dict | None, key: str, prefix: str) -> float | None:
    """An optional number (never a boolean); absent or null -> None."""
    if container is None:
        return None
    value = container.get(key)
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return _INF if value > 0 else -_INF
    if value is None:
        return None
    raise _bad_type(prefix + key, value, "a number")


def _text(container: dict | None, key: str, prefix: str) -> str | None:
    if container is None:
        return None
    value = container.get(key)
    if type(value) is str:
        return value
    if value is None:
        return None
    raise _bad_type(prefix + key, value, "a string")


def _neg(value: float | None) -> float | None:
    # 0.0 - x, not -x: a zero stays +0.0 (no "-0.0" in replayed output).
    return None if value is None else 0.0 - value


def _required_time(container: dict | None, key: str, path: str) -> str:
    value = None if container is None else container.get(key)
    if type(value) is str:
        return value
    if value is None:
        raise _Reject("missing_field:" + path, f"{path}, the reading time, is required; the gateway sent none")
    raise _bad_type(path, value, "a string")


def _bad_timestamp(path: str, text: Any, why: str) -> _Reject:
    return _Reject("bad_timestamp", f"{path} {describe(text)} {why}")


_ZONES: dict[str, tzinfo] = {}


def _zone(asset: AssetInfo) -> tzinfo:
    name = asset.timezone
    if isinstance(name, tzinfo):
        return name
    try:
        return _ZONES[name]
    except (KeyError, TypeError):
        pass
    try:
        zone = ZoneInfo(name)
    except (ValueError, OSError, KeyError, TypeError) as err:  # ZoneInfoNotFoundError is a KeyError
        raise _Reject(
            "bad_timestamp",
            f"local Timestamp cannot be converted: the asset registry's timezone {describe(name)} for "
            f"device {asset.device_id!r} is not an IANA zone ({type(err).__name__}); fix the registry",
        ) from None
    _ZONES[name] = zone
    return zone


# ---------------------------------------------------------------- dialects

_TESLA_TIME = "payload.aggregates.battery.last_communication_time"
_measured = tuple.__new__  # Measured(...) via its generated __new__ costs a Python call per reading


def parse_tesla(payload: dict, asset: AssetInfo) -> Measured:
    """``tesla-gateway/1``, every check in the spec's order (``parse_tesla`` without its fast path)."""
    aggregates = _obj(payload, "aggregates", "payload.aggregates")
    site = _obj(aggregates, "site", "payload.aggregates.site")
    grid_w = _num(site, "instant_power", "payload.aggregates.site.")
    battery = _obj(aggregates, "battery", "payload.aggregates.battery")
    battery_w = _num(battery, "instant_power", "payload.aggregates.battery.")
    load = _obj(aggregates, "load", "payload.aggregates.load")
    load_w = _num(load, "instant_power", "payload.aggregates.load.")
    solar = _obj(aggregates, "solar", "payload.aggregates.solar")
    solar_w = _num(solar, "instant_power", "payload.aggregates.solar.")
    percentage = _num(_obj(payload, "soe", "payload.soe"), "percentage", "payload.soe.")
    status = _text(payload, "grid_status", "payload.")

    text = _required_time(battery, "last_communication_time", _TESLA_TIME)
    parsed = iso_ms(text)
    if parsed is None:
        raise _bad_timestamp(_TESLA_TIME, text, "is not an ISO-8601 date-time")
    wall, offset = parsed
    if offset is None:
        raise _bad_timestamp(_TESLA_TIME, text, "has no UTC offset, so it cannot be placed in time")

    usable_soc = None if percentage is None else (percentage - 5.0) / 0.95  # hide the 5 % reserve
    connected = None if status is None else status == _TESLA_ON_GRID
    return _measured(
        Measured, (wall - offset, usable_soc, battery_w, solar_w, load_w, grid_w, connected, None, None)
    )


def parse_sonnen(payload: dict, asset: AssetInfo) -> Measured:
    """``sonnen/2``, every check in the spec's order (``parse_sonnen`` without its fast path)."""
    soc = _num(payload, "USOC", "payload.")
    battery_w = _num(payload, "Pac_total_W", "payload.")
    solar_w = _num(payload, "Production_W", "payload.")
    load_w = _num(payload, "Consumption_W", "payload.")
    grid_w = _neg(_num(payload, "GridFeedIn_W", "payload."))
    status = _text(payload, "SystemStatus", "payload.")

    text = _required_time(payload, "Timestamp", "payload.Timestamp")
    parsed = iso_ms(text)
    if parsed is None:
        raise _bad_timestamp("payload.Timestamp", text, "is not a 'YYYY-MM-DD HH:MM:SS' local time")
    wall, offset = parsed
    time_flag = None
    if offset is None:  # the normal case: local time in the registry's zone
        offset, in_gap = local_offset_ms(_zone(asset), wall)
        if in_gap:
            time_flag = "local_time_gap"
    # else: an explicit offset wins over the registry

    connected = None if status is None else status == _SONNEN_ON_GRID
    return _measured(
        Measured, (wall - offset, soc, battery_w, solar_w, load_w, grid_w, connected, None, time_flag)
    )


def _register(model: dict | None, name: str, prefix: str) -> float | None:
    """SunSpec ``X * 10**X_SF``; a not-implemented register or scale factor -> None."""
    if model is None:
        return None
    value = _num(model, name, prefix)
    sf_name = name + "_SF"
    sf = model.get(sf_name)
    non_finite_sf = False
    if type(sf) is not int and sf is not None:
        if type(sf) is not float:
            raise _bad_scale(prefix + sf_name, sf)
        if sf != sf or sf in (_INF, -_INF):
            non_finite_sf = True
        elif sf.is_integer():
            sf = int(sf)
        else:
            raise _bad_scale(prefix + sf_name, sf)
    if value is None or sf is None or value in _NOT_IMPLEMENTED or sf in _NOT_IMPLEMENTED:
        return None
    if non_finite_sf:
        return _INF - _INF  # NaN: nulled and flagged non_finite by the scrubber
    if 0 <= sf <= 10:
        return value * _POW10[sf]
    if -10 <= sf < 0:
        return value / _POW10[-sf]  # divide: 6123 / 100 is 61.23, 6123 * 0.01 is not
    raise _bad_scale(prefix + sf_name, sf)


def _bad_scale(path: str, sf: Any) -> _Reject:
    return _bad_type(path, sf, "an integer scale factor in [-10, 10]")


def parse_sunspec(payload: dict, asset: AssetInfo) -> Measured:
    """``sunspec/802``, every check in the spec's order (``parse_sunspec`` without its fast path)."""
    models = _obj(payload, "models", "payload.models")
    battery = _obj(models, "802", "payload.models.802")
    soc = _register(battery, "SoC", "payload.models.802.")
    charge_w = _register(battery, "W", "payload.models.802.")
    capacity_wh = _register(battery, "WHRtg", "payload.models.802.")
    meter = _obj(models, "203", "payload.models.203")
    grid_w = _register(meter, "W", "payload.models.203.")

    seconds = payload.get("timestamp")
    kind = type(seconds)
    if kind is int:
        ts = seconds * 1000
    elif kind is float:
        if seconds != seconds or seconds in (_INF, -_INF):
            raise _bad_timestamp("payload.timestamp", seconds, "is not a finite number of epoch seconds")
        ms = seconds * 1000
        # finite seconds whose milliseconds overflow a float: as far in time as 10**400 (future or stale)
        ts = int(seconds) * 1000 if ms in (_INF, -_INF) else int(ms)
    elif seconds is None:
        raise _Reject(
            "missing_field:payload.timestamp", "payload.timestamp, the reading time, is required; the gateway sent none"
        )
    else:
        raise _bad_type("payload.timestamp", seconds, "integer epoch seconds")

    return _measured(Measured, (ts, soc, _neg(charge_w), None, None, grid_w, None, capacity_wh, None))


PARSERS = {
    "tesla-gateway/1": parse_tesla,
    "sonnen/2": parse_sonnen,
    "sunspec/802": parse_sunspec,
}
