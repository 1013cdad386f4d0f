"""Pure logic of the canonicalization flow: raw gateway JSON -> canonical reading or DLQ record.

Implements spec/telemetry.md sections 1-4 with no I/O, clock or environment:
``canonicalize`` checks one raw message in the spec's order and either
returns the canonical record (a plain dict whose keys are the Avro field
names of ``telemetry.canonical``) or a ``Rejection`` for ``telemetry.dlq``;
``dedup_step`` is the per-device ``stateful_map`` step that drops a second
reading with the same ``(device_id, ts)``.

Readings of the spec where it leaves room (see also canonicalize_dialects):

- JSON is parsed by orjson; only if orjson refuses the message is it parsed
  again by the standard library, which also accepts the ``NaN``,
  ``Infinity`` and ``-Infinity`` literals some gateways emit and numbers
  beyond a double (``1e400`` -> inf). Such values are nulled and flagged
  ``non_finite:<field>``, never a ``malformed_json``. Nesting too deep for
  either parser, invalid UTF-8, a byte-order mark and a Kafka tombstone
  (``None``) are ``malformed_json``.
- ``received_at`` that is not a parseable ISO-8601 date-time is
  ``bad_field:received_at`` (``bad_timestamp`` is for the reading time); one
  without an offset is taken as UTC, as section 1 says it is.
- ``device_id`` is reported on a rejection once it has passed its pattern
  check (so also for ``unknown_device``); before that it is None.
- Non-finite SoC is ``non_finite:soc_pct`` (not ``soc_invalid``); a
  non-finite reported capacity is nulled (``non_finite:capacity_wh``) and
  the registry's used instead.
- ``load_w`` below 0 becomes 0 with flag ``load_negative``: the canonical
  table promises ``load_w >= 0`` and a repair is never silent (mirrors
  ``solar_negative``).
- ``power_outlier:battery_w`` is checked only where the registry's limit is
  known and positive. ``imbalance`` is computed on the repaired values.
- Flags are ordered as the repairs are made: ``local_time_gap`` (while
  reading the time), then per field in canonical order (soc_pct, battery_w,
  solar_w, load_w, grid_w, capacity_wh), then ``imbalance``.
- Future/stale bounds are exclusive: exactly 300 s ahead or 24 h behind is
  still accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from math import isfinite
from typing import Any, Mapping, NoReturn, Protocol

import orjson

from vpp.assets import Asset  # the registry's one Asset type; enrichment reads the AssetInfo fields of it
from vpp.dead_letters import dead_letter_record, kafka_timestamp_ms
from flows.canonicalize.dialects import (
    PARSERS,
    Measured,
    _Reject,
    describe,
    iso_ms,
    parse_sonnen,
    parse_sunspec,
    parse_tesla,
)

__all__ = [
    "AssetInfo",
    "Asset",
    "SourcePosition",
    "Canonical",
    "Rejection",
    "Measured",
    "canonicalize",
    "parse_tesla",
    "parse_sonnen",
    "parse_sunspec",
    "DIALECTS",
    "REASON_CODES",
    "FUTURE_LIMIT_MS",
    "STALE_LIMIT_MS",
    "DedupState",
    "dedup_step",
    "DEDUP_HORIZON_MS_DEFAULT",
]

#: The canonical reading: a plain dict keyed exactly by the Avro field names.
Canonical = dict

DIALECTS = tuple(PARSERS)
#: Reason codes of section 4; ``missing_field`` and ``bad_field`` take ``:<path>``.
REASON_CODES = (
    "malformed_json",
    "missing_field",
    "bad_field",
    "unknown_dialect",
    "unknown_device",
    "bad_timestamp",
    "future_timestamp",
    "stale",
)
FUTURE_LIMIT_MS = 300_000
STALE_LIMIT_MS = 86_400_000
#: How far behind a device's newest ``ts`` duplicates are still recognised.
DEDUP_HORIZON_MS_DEFAULT = 600_000

_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}").fullmatch
_DEVICE_ID_WANTED = "a string of 1-64 characters [A-Za-z0-9._:-]"
_VALID_DEVICE_IDS: set[str] = set()  # memo of ids that passed _DEVICE_ID
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class AssetInfo(Protocol):
    """What canonicalization reads from an asset-registry row (spec section 5)."""

    @property
    def device_id(self) -> str: ...
    @property
    def site_id(self) -> str: ...
    @property
    def region_path(self) -> str: ...
    @property
    def timezone(self) -> str: ...  # IANA name
    @property
    def capacity_wh(self) -> float | None: ...
    @property
    def max_charge_w(self) -> float | None: ...
    @property
    def max_discharge_w(self) -> float | None: ...
    @property
    def reserve_pct(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a raw message was read: copied into its DLQ record."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A raw message that failed a check, bound for ``telemetry.dlq``."""

    reason: str
    detail: str
    raw: bytes
    source_topic: str
    source_partition: int
    source_offset: int
    device_id: str | None = None
    source_timestamp: int | None = None  # the Kafka timestamp of the message: when the platform received it

    def to_record(self) -> dict[str, Any]:
        return dead_letter_record(self.reason, self.detail, self.raw, source_topic=self.source_topic,
                                  source_partition=self.source_partition, source_offset=self.source_offset,
                                  source_timestamp=self.source_timestamp, device_id=self.device_id)


def _parse_lenient(raw: bytes, strict: Exception) -> Any:
    """The stdlib parser, for what orjson refused (NaN/Infinity literals, numbers beyond a double)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Reject("malformed_json", f"not valid UTF-8 JSON: {strict}") from None


def _seconds(ms: int) -> str:
    # integer arithmetic: a reading time may be an integer far beyond a float
    return f"{ms // 1000}.{ms % 1000:03d} s" if abs(ms) < 10**15 else "more than 30000 years"


def canonicalize(raw: bytes, position: SourcePosition, assets: Mapping[str, AssetInfo], *,
                 platform_clock: bool = True) -> Canonical | Rejection:
    """Check one raw message (spec order, first failure decides) and canonicalize it.

    ``platform_clock``: also judge the reading time against the Kafka timestamp at which the platform received the
    message (off only for a simulation running faster than real time through the gateway, whose clock is real).
    """
    device_id = None
    try:
        if type(raw) is not bytes:
            raw = b"" if raw is None else bytes(raw)
        try:
            doc = _loads(raw)
        except _JSONDecodeError as strict:
            doc = _parse_lenient(raw, strict)
        if type(doc) is not dict:
            raise _Reject("malformed_json", f"the message must be a JSON object, got {describe(doc)}")

        value = doc.get("device_id")
        if type(value) is not str:
            _envelope_field_error("device_id", value, _DEVICE_ID_WANTED)
        if value not in _VALID_DEVICE_IDS:
            if _DEVICE_ID(value) is None:
                _envelope_field_error("device_id", value, _DEVICE_ID_WANTED)
            if value in assets:  # remember registered ids only: bounded by the registry
                _VALID_DEVICE_IDS.add(value)
        device_id = value
        dialect = doc.get("dialect")
        if type(dialect) is not str:
            _envelope_field_error("dialect", dialect, "a string")
        received_text = doc.get("received_at")
        if type(received_text) is not str:
            _envelope_field_error("received_at", received_text, "an ISO-8601 UTC date-time string")
        received = iso_ms(received_text)
        if received is None:
            _envelope_field_error("received_at", received_text, "an ISO-8601 UTC date-time string")
        payload = doc.get("payload")
        if type(payload) is not dict:
            _envelope_field_error("payload", payload, "an object")
        parser = PARSERS.get(dialect)
        if parser is None:
            raise _Reject("unknown_dialect", f"dialect {describe(dialect)} is not one of {', '.join(DIALECTS)}")
        asset = assets.get(device_id)
        if asset is None:
            raise _Reject("unknown_device", f"device {device_id!r} is not in the asset registry; register it first")

        measured = parser(payload, asset)
        ts = measured.ts
        as_of = getattr(assets, "as_of", None)
        if as_of is not None:  # a registry through time (a replay as of then): the version valid at the reading
            asset = as_of(device_id, ts)
            if asset is None:
                raise _Reject("unknown_device", f"device {device_id!r} was not in the asset registry at the reading's "
                              f"time {ts} (not yet registered, or decommissioned)")
        received_ms = received[0] if received[1] is None else received[0] - received[1]  # naive: UTC
        if ts - received_ms > FUTURE_LIMIT_MS:
            raise _Reject(
                "future_timestamp",
                f"reading time is {_seconds(ts - received_ms)} after received_at {describe(received_text)} "
                "(limit 300 s); check the gateway's clock",
            )
        if received_ms - ts > STALE_LIMIT_MS:
            raise _Reject(
                "stale",
                f"reading time is {_seconds(received_ms - ts)} before received_at {describe(received_text)} "
                "(limit 24 h); old data is not replayed into the live topic",
            )
        platform_ms = kafka_timestamp_ms(position) if platform_clock else None
        if platform_ms is not None:
            # the envelope's received_at is the gateway's word: judge the reading by the platform's clock too
            # (the Kafka timestamp at which the broker took it), so a device and gateway clock far ahead or
            # behind is rejected here instead of being dropped silently by the time-series store
            if ts - platform_ms > FUTURE_LIMIT_MS:
                raise _Reject("future_timestamp", f"reading time is {_seconds(ts - platform_ms)} after the platform "
                              "received it (Kafka timestamp; limit 300 s); check the device's and gateway's clocks")
            if platform_ms - ts > STALE_LIMIT_MS:
                raise _Reject("stale", f"reading time is {_seconds(platform_ms - ts)} before the platform received "
                              "it (Kafka timestamp; limit 24 h); old data is not replayed into the live topic")
    except _Reject as reject:
        return Rejection(reject.reason, reject.detail, raw, position.topic, position.partition, position.offset,
                         device_id, kafka_timestamp_ms(position))
    return _scrub(device_id, dialect, asset, measured)


def _envelope_field_error(name: str, value: Any, wanted: str) -> NoReturn:
    if value is None:
        raise _Reject("missing_field:" + name, f"envelope field {name} is required ({wanted}); it is absent or null")
    raise _Reject("bad_field:" + name, f"envelope field {name} must be {wanted}, got {describe(value)}")


def _non_negative(watts: float | None, name: str, flags: list[str]) -> float | None:
    """A power that cannot be negative (solar, load): None when not finite, 0 when negative; flagged."""
    if watts is not None:
        if not isfinite(watts):
            flags.append(f"non_finite:{name}_w")
            return None
        if watts < 0.0:
            flags.append(f"{name}_negative")
            return 0.0
    return watts


def _scrub(device_id: str, dialect: str, asset: AssetInfo, m: Measured) -> Canonical:
    """Apply section 4's repairs, flagging each one, and build the canonical record."""
    flags: list[str] = []
    if m.time_flag is not None:
        flags.append(m.time_flag)

    soc = m.soc_pct
    if soc is not None:
        if not isfinite(soc):
            soc = None
            flags.append("non_finite:soc_pct")
        elif soc < 0.0 or soc > 100.0:
            if -2.0 <= soc <= 102.0:
                soc = 0.0 if soc < 0.0 else 100.0
                flags.append("soc_clamped")
            else:
                soc = None
                flags.append("soc_invalid")

    battery = m.battery_w
    if battery is not None:
        if not isfinite(battery):
            battery = None
            flags.append("non_finite:battery_w")
        elif battery:
            limit = asset.max_discharge_w if battery > 0.0 else asset.max_charge_w
            if limit is not None and limit > 0 and abs(battery) > 3.0 * limit:
                battery = None
                flags.append("power_outlier:battery_w")

    solar = _non_negative(m.solar_w, "solar", flags)
    load = _non_negative(m.load_w, "load", flags)

    grid = m.grid_w
    if grid is not None and not isfinite(grid):
        grid = None
        flags.append("non_finite:grid_w")

    capacity = m.capacity_wh
    if capacity is not None and not isfinite(capacity):
        capacity = None
        flags.append("non_finite:capacity_wh")
    if capacity is None:
        capacity = asset.capacity_wh
        if capacity is not None:
            capacity = float(capacity)

    if solar is not None and grid is not None and battery is not None and load is not None:
        tolerance = 0.1 * load  # max(250.0, 0.1 * load) without the call (the hot path)
        if abs(solar + grid + battery - load) > (tolerance if tolerance > 250.0 else 250.0):
            flags.append("imbalance")

    return {
        "device_id": device_id,
        "site_id": asset.site_id,
        "region_path": asset.region_path,
        "ts": m.ts,
        "dialect": dialect,
        "soc_pct": soc,
        "battery_w": battery,
        "solar_w": solar,
        "load_w": load,
        "grid_w": grid,
        "grid_connected": m.grid_connected,
        "capacity_wh": capacity,
        "flags": flags,
    }


# ---------------------------------------------------------------- dedup


@dataclass(slots=True)
class DedupState:
    """Per-device memory of recent reading times.

    ``seen`` holds the ``ts`` values accepted within ``horizon_ms`` behind
    ``newest_ts`` (older ones are pruned lazily; they are never consulted).
    Mutated in place by ``dedup_step`` (saves a copy per reading): the flow
    snapshots a pickled copy of the states, never the live objects.
    """

    newest_ts: int
    seen: set[int] = field(default_factory=set)
    pruned_below: int = 0


def dedup_step(
    state: DedupState | None, reading: Canonical, horizon_ms: int = DEDUP_HORIZON_MS_DEFAULT
) -> tuple[DedupState, tuple[Canonical | None, bool]]:
    """``stateful_map`` step keyed by device_id: emit ``(reading, False)`` or ``(None, True)`` for a duplicate.

    A reading more than ``horizon_ms`` older than the newest ``ts`` seen for
    its device passes through (it cannot be checked without unbounded
    state); downstream writes are idempotent per (device, ts), so a rare
    late duplicate is harmless there. Use ``functools.partial`` to set the
    horizon.
    """
    ts = reading["ts"]
    if state is None:
        return DedupState(ts, {ts}, ts - horizon_ms), (reading, False)
    newest = state.newest_ts
    if ts > newest:
        state.newest_ts = ts
        cutoff = ts - horizon_ms
        # prune when the cutoff has moved a quarter horizon: amortised O(1) per reading
        if cutoff - state.pruned_below > horizon_ms >> 2:
            state.seen = {t for t in state.seen if t >= cutoff}
            state.pruned_below = cutoff
        state.seen.add(ts)
        return state, (reading, False)
    if ts < newest - horizon_ms:
        return state, (reading, False)
    seen = state.seen
    if ts in seen:
        return state, (None, True)
    seen.add(ts)
    return state, (reading, False)
