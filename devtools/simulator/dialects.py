"""Raw encoders: a device's true canonical state written the way its gateway speaks.

One function per dialect of spec/telemetry.md section 2, plus the envelope
of section 1. Pure: the truth (``Reading``) and the device in, JSON-ready
dicts out; serialization to bytes is ``envelope_bytes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from devtools.simulator.tree import Device

__all__ = [
    "Reading",
    "TESLA_RESERVE_PCT",
    "encode_payload",
    "encode_envelope",
    "envelope_bytes",
    "iso_utc_ms",
    "tesla_time",
    "sonnen_time",
]

#: The hidden reserve of the tesla-gateway dialect's ``soe.percentage``.
TESLA_RESERVE_PCT = 5.0
_INT16_MAX = 32767
_UINT16_MAX = 65534  # 65535 means "not implemented"


@dataclass(frozen=True)
class Reading:
    """What a device measured, in canonical units and signs.

    ``reading_ns`` is the device clock (it may be skewed from true time), in
    epoch nanoseconds. ``battery_w`` > 0 discharges, ``grid_w`` > 0 imports.
    """

    device_id: str
    reading_ns: int
    soc_pct: float
    battery_w: float
    solar_w: float
    load_w: float
    grid_w: float
    grid_connected: bool = True


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def iso_utc_ms(epoch_ms: int) -> str:
    """``2026-11-23T19:30:00.123Z``."""
    secs, ms = divmod(epoch_ms, 1000)
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def tesla_time(reading_ns: int, tz: str) -> str:
    """Local time with the site's offset and 9 fractional digits: ``2026-11-23T11:29:59.598548052-08:00``."""
    secs, frac_ns = divmod(reading_ns, 1_000_000_000)
    local = datetime.fromtimestamp(secs, _zone(tz))
    offset = local.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac_ns:09d}{sign}{hh:02d}:{mm:02d}"


def sonnen_time(reading_ns: int, tz: str) -> str:
    """The site's local wall-clock time without offset, whole seconds: ``2026-11-23 20:30:00``."""
    local = datetime.fromtimestamp(reading_ns // 1_000_000_000, _zone(tz))
    return local.strftime("%Y-%m-%d %H:%M:%S")


def _w1(value: float) -> float:
    return round(value, 1) + 0.0  # one decimal as gateways report, never "-0.0"


def _tesla(device: Device, r: Reading) -> dict[str, Any]:
    t = tesla_time(r.reading_ns, device.timezone)
    percentage = r.soc_pct * (100.0 - TESLA_RESERVE_PCT) / 100.0 + TESLA_RESERVE_PCT
    return {
        "aggregates": {
            "site": {"last_communication_time": t, "instant_power": _w1(r.grid_w)},
            "battery": {"last_communication_time": t, "instant_power": _w1(r.battery_w)},
            "load": {"last_communication_time": t, "instant_power": _w1(r.load_w)},
            "solar": {"last_communication_time": t, "instant_power": _w1(r.solar_w)},
        },
        "soe": {"percentage": round(percentage, 4)},
        "grid_status": "SystemGridConnected" if r.grid_connected else "SystemIslandedActive",
    }


def _sonnen(device: Device, r: Reading) -> dict[str, Any]:
    usoc = round(r.soc_pct)
    # RSOC counts the cells' full range, of which the usable window is 7-97 %: ignored downstream.
    rsoc = round(7.0 + r.soc_pct * 0.9)
    return {
        "Timestamp": sonnen_time(r.reading_ns, device.timezone),
        "USOC": usoc,
        "RSOC": rsoc,
        "Pac_total_W": round(r.battery_w),
        "Production_W": round(r.solar_w),
        "Consumption_W": round(r.load_w),
        "GridFeedIn_W": round(-r.grid_w),
        "SystemStatus": "OnGrid" if r.grid_connected else "OffGrid",
    }


def _register(value: float, sf: int, limit: int = _INT16_MAX) -> int:
    x = round(value / 10**sf)
    return max(-limit, min(limit, x))


def _sunspec(device: Device, r: Reading) -> dict[str, Any]:
    capacity = device.asset.capacity_wh
    whrtg_sf = 2 if capacity % 100 == 0 and capacity / 100 <= _UINT16_MAX else 1
    while capacity / 10**whrtg_sf > _UINT16_MAX:
        whrtg_sf += 1
    models: dict[str, Any] = {
        "802": {
            "SoC": max(0, min(10000, round(r.soc_pct * 100))),
            "SoC_SF": -2,
            "W": _register(-r.battery_w, device.w_sf),  # model 802: W > 0 CHARGES
            "W_SF": device.w_sf,
            "WHRtg": round(capacity / 10**whrtg_sf),
            "WHRtg_SF": whrtg_sf,
        }
    }
    if device.has_meter:
        models["203"] = {"W": _register(r.grid_w, device.meter_sf), "W_SF": device.meter_sf}
    return {"timestamp": r.reading_ns // 1_000_000_000, "models": models}


_ENCODERS = {"tesla-gateway/1": _tesla, "sonnen/2": _sonnen, "sunspec/802": _sunspec}


def encode_payload(device: Device, reading: Reading) -> dict[str, Any]:
    """The dialect payload of a reading (spec section 2)."""
    return _ENCODERS[device.dialect](device, reading)


def encode_envelope(device: Device, reading: Reading, received_at_ms: int) -> dict[str, Any]:
    """The raw envelope (spec section 1); ``received_at_ms`` is the edge's (true) clock."""
    return {
        "device_id": device.device_id,
        "dialect": device.dialect,
        "received_at": iso_utc_ms(received_at_ms),
        "payload": encode_payload(device, reading),
    }


def envelope_bytes(envelope: dict[str, Any], *, allow_nan: bool = False) -> bytes:
    """UTF-8 JSON. ``allow_nan`` writes NaN as the bare ``NaN`` literal, as a broken gateway would."""
    if allow_nan:
        return json.dumps(envelope, separators=(",", ":"), allow_nan=True).encode()
    return orjson.dumps(envelope)
