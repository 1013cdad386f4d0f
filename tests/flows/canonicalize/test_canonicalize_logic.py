"""Canonicalization contract (spec/telemetry.md sections 1-4): one table row per rule or example."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.canonicalize.dialects import iso_ms, parse_iso
from dialect_examples import SONNEN, SUNSPEC, TESLA
from documents import DELETE, edited
from flows.canonicalize.logic import (
    DEDUP_HORIZON_MS_DEFAULT,
    Asset,
    DedupState,
    Rejection,
    SourcePosition,
    canonicalize,
    dedup_step,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
POS = SourcePosition("telemetry.raw", 3, 17)
ONE_MS = timedelta(milliseconds=1)
ASSETS = {
    "pw-000123": Asset("pw-000123", "site-0042", "us/ca/pge/94110/site-0042", "America/Los_Angeles",
                       capacity_wh=13500.0, max_charge_w=5000.0, max_discharge_w=5000.0, reserve_pct=5.0),
    "sb-000001": Asset("sb-000001", "site-0007", "de/by/ewb/80331/site-0007", "Europe/Berlin",
                       capacity_wh=10000.0, max_charge_w=2000.0, max_discharge_w=4600.0, reserve_pct=0.0),
    "ss-000001": Asset("ss-000001", "site-0009", "us/tx/ercot/78701/site-0009", "America/Chicago",
                       capacity_wh=9800.0, max_charge_w=5000.0, max_discharge_w=5000.0, reserve_pct=10.0),
    "bad-tz": Asset("bad-tz", "site-0001", "xx/site-0001", "Mars/Olympus_Mons", capacity_wh=None),
}

RECEIVED = {"tesla-gateway/1": "2026-11-23T19:30:00.123Z", "sonnen/2": "2026-11-23T19:30:00.500Z",
            "sunspec/802": "2026-11-23T19:35:00Z"}
DEVICE = {"tesla-gateway/1": "pw-000123", "sonnen/2": "sb-000001", "sunspec/802": "ss-000001"}
EXAMPLE = {"tesla-gateway/1": TESLA, "sonnen/2": SONNEN, "sunspec/802": SUNSPEC}


def utc_ms(text: str) -> int:
    """Test oracle: epoch ms of an ISO-8601 UTC time, via datetime."""
    return int(datetime.fromisoformat(text).astimezone(timezone.utc).timestamp() * 1000)


def envelope(kind: str, /, **changes) -> dict:
    """The spec example of dialect ``kind`` with ``changes`` (``payload__USOC=...`` sets payload.USOC)."""
    env = {"device_id": DEVICE[kind], "dialect": kind, "received_at": RECEIVED[kind],
           "payload": copy.deepcopy(EXAMPLE[kind])}
    for path, value in changes.items():
        env = edited(env, path.split("__"), value)
    return env


def raw(doc) -> bytes:
    # stdlib json writes NaN/Infinity literals for non-finite floats, as lenient gateways do
    return json.dumps(doc, allow_nan=True).encode()


def run(doc_or_bytes):
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else raw(doc_or_bytes)
    return canonicalize(data, POS, ASSETS)


# ---------------------------------------------------------------- spec examples

EXAMPLES = [
    pytest.param(envelope("tesla-gateway/1"), {
        "device_id": "pw-000123", "site_id": "site-0042", "region_path": "us/ca/pge/94110/site-0042",
        "ts": 1795462199598,  # 11:29:59.598548052-08:00 = 19:29:59.598Z, digits past ms truncated
        "dialect": "tesla-gateway/1",
        "soc_pct": 67.47368421052632,  # (69.1 - 5) / 0.95
        "battery_w": -2400.0,  # battery > 0 discharges in both conventions: -2400 charges
        "solar_w": 3100.0, "load_w": 860.2, "grid_w": 160.2, "grid_connected": True,
        "capacity_wh": 13500.0,  # not reported: the registry's
        "flags": []}, id="tesla-example"),
    pytest.param(envelope("sonnen/2"), {
        "device_id": "sb-000001", "site_id": "site-0007", "region_path": "de/by/ewb/80331/site-0007",
        "ts": 1795462200000,  # 20:30 CET (+01:00) = 19:30:00Z
        "dialect": "sonnen/2", "soc_pct": 71.0, "battery_w": 1398.0, "solar_w": 0.0, "load_w": 1410.0,
        "grid_w": 12.0,  # GridFeedIn_W -12 exports negatively: imports 12 W
        "grid_connected": True, "capacity_wh": 10000.0, "flags": []}, id="sonnen-example"),
    pytest.param(envelope("sunspec/802"), {
        "device_id": "ss-000001", "site_id": "site-0009", "region_path": "us/tx/ercot/78701/site-0009",
        "ts": 1795462493000, "dialect": "sunspec/802",
        "soc_pct": 61.23,  # 6123 * 10**-2
        "battery_w": 2500.0,  # W = -25 * 10**2 = -2500, > 0 charges: discharging 2500 W
        "solar_w": None, "load_w": None,
        "grid_w": 1520.0,  # 152 * 10**1, > 0 imports
        "grid_connected": None, "capacity_wh": 13500.0,  # WHRtg 135 * 10**2, reported
        "flags": []}, id="sunspec-example"),
]


@pytest.mark.parametrize(("doc", "expected"), EXAMPLES)
def test_spec_examples_canonicalize_to_hand_computed_records(doc, expected):
    assert run(doc) == expected


def test_canonical_record_keys_are_the_avro_fields_and_encode():
    schema = json.loads((SCHEMAS / "canonical_reading.avsc").read_text())
    parsed = fastavro.parse_schema(schema)
    for param in EXAMPLES:
        record = run(param.values[0])
        assert list(record) == [f["name"] for f in schema["fields"]]
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        buf.seek(0)
        decoded = fastavro.schemaless_reader(buf, parsed)
        decoded["ts"] = (decoded["ts"] - datetime(1970, 1, 1, tzinfo=timezone.utc)) // ONE_MS
        assert decoded == record


def test_rejection_record_is_the_dlq_schema_and_keeps_the_raw_bytes():
    schema = json.loads((SCHEMAS / "dlq_record.avsc").read_text())
    data = raw(envelope("tesla-gateway/1", device_id="pw-999999"))
    rejection = canonicalize(data, POS, ASSETS)
    record = rejection.to_record()
    assert list(record) == [f["name"] for f in schema["fields"]]
    assert record == {"reason": "unknown_device", "detail": rejection.detail, "raw": data,
                      "source_topic": "telemetry.raw", "source_partition": 3, "source_offset": 17,
                      "device_id": "pw-999999", "source_timestamp": None, "raw_length": len(data),
                      "raw_sha256": hashlib.sha256(data).hexdigest(), "raw_truncated": False}
    assert "pw-999999" in rejection.detail
    fastavro.schemaless_writer(io.BytesIO(), fastavro.parse_schema(schema), record)


def test_results_and_registry_rows_pickle():
    # bytewax pickles items and state between processes and into recovery snapshots
    for value in (run(envelope("sonnen/2")), run(b"[]"), ASSETS["pw-000123"], POS, dedup_step(None, {"ts": 1})[0]):
        assert pickle.loads(pickle.dumps(value)) == value


# ---------------------------------------------------------------- every reason code

NAN_PAYLOAD_TIME = raw(envelope("sunspec/802")).replace(b'"timestamp": 1795462493', b'"timestamp": NaN')
REJECTIONS = [
    # JSON and object shape
    (b"not json", "malformed_json"),
    (b"", "malformed_json"),
    (b'{"device_id": "pw-000123"', "malformed_json"),
    (b'{"device_id": "\xff\xfe"}', "malformed_json"),  # invalid UTF-8
    (b"\xef\xbb\xbf" + raw(envelope("sonnen/2")), "malformed_json"),  # byte-order mark
    (b"[1, 2]", "malformed_json"),
    (b'"pw-000123"', "malformed_json"),
    (b"null", "malformed_json"),
    (b"NaN", "malformed_json"),
    (b"[" * 10_000, "malformed_json"),
    (b"[" * 10_000 + b"]" * 10_000, "malformed_json"),
    (None, "malformed_json"),  # a Kafka tombstone
    # envelope fields, in order
    (envelope("sonnen/2", device_id=DELETE), "missing_field:device_id"),
    (envelope("sonnen/2", device_id=None), "missing_field:device_id"),
    (envelope("sonnen/2", device_id=5), "bad_field:device_id"),
    (envelope("sonnen/2", device_id=True), "bad_field:device_id"),
    (envelope("sonnen/2", device_id=""), "bad_field:device_id"),
    (envelope("sonnen/2", device_id="a" * 65), "bad_field:device_id"),
    (envelope("sonnen/2", device_id="sb 000001"), "bad_field:device_id"),
    (envelope("sonnen/2", device_id="sb-000001\n"), "bad_field:device_id"),
    (envelope("sonnen/2", device_id=["sb-000001"]), "bad_field:device_id"),
    (envelope("sonnen/2", dialect=DELETE), "missing_field:dialect"),
    (envelope("sonnen/2", dialect=2), "bad_field:dialect"),
    (envelope("sonnen/2", received_at=DELETE), "missing_field:received_at"),
    (envelope("sonnen/2", received_at=None), "missing_field:received_at"),
    (envelope("sonnen/2", received_at=1795462200), "bad_field:received_at"),
    (envelope("sonnen/2", received_at="yesterday"), "bad_field:received_at"),
    (envelope("sonnen/2", received_at="2026-02-30T00:00:00Z"), "bad_field:received_at"),
    (envelope("sonnen/2", payload=DELETE), "missing_field:payload"),
    (envelope("sonnen/2", payload=[]), "bad_field:payload"),
    (envelope("sonnen/2", payload="{}"), "bad_field:payload"),
    (envelope("sonnen/2", dialect="sonnen/3"), "unknown_dialect"),
    (envelope("sonnen/2", dialect="Sonnen/2"), "unknown_dialect"),
    (envelope("sonnen/2", device_id="sb-999999"), "unknown_device"),
    # tesla-gateway/1 fields
    (envelope("tesla-gateway/1", payload__aggregates=[]), "bad_field:payload.aggregates"),
    (envelope("tesla-gateway/1", payload__aggregates__site="x"), "bad_field:payload.aggregates.site"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__instant_power="-2400"),
     "bad_field:payload.aggregates.battery.instant_power"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__instant_power=True),
     "bad_field:payload.aggregates.battery.instant_power"),
    (envelope("tesla-gateway/1", payload__aggregates__solar__instant_power={}),
     "bad_field:payload.aggregates.solar.instant_power"),
    (envelope("tesla-gateway/1", payload__soe=[69.1]), "bad_field:payload.soe"),
    (envelope("tesla-gateway/1", payload__soe__percentage="69.1"), "bad_field:payload.soe.percentage"),
    (envelope("tesla-gateway/1", payload__grid_status=1), "bad_field:payload.grid_status"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=DELETE),
     "missing_field:payload.aggregates.battery.last_communication_time"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=None),
     "missing_field:payload.aggregates.battery.last_communication_time"),
    (envelope("tesla-gateway/1", payload__aggregates__battery=None),
     "missing_field:payload.aggregates.battery.last_communication_time"),
    (envelope("tesla-gateway/1", payload={}), "missing_field:payload.aggregates.battery.last_communication_time"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=1795462199),
     "bad_field:payload.aggregates.battery.last_communication_time"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time="yesterday"),
     "bad_timestamp"),
    (envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time="2026-11-23T11:29:59"),
     "bad_timestamp"),  # no offset: cannot be placed in time
    (envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time="2026-11-31T11:29:59Z"),
     "bad_timestamp"),
    # sonnen/2 fields
    (envelope("sonnen/2", payload__USOC="71"), "bad_field:payload.USOC"),
    (envelope("sonnen/2", payload__Pac_total_W=False), "bad_field:payload.Pac_total_W"),
    (envelope("sonnen/2", payload__Production_W="0"), "bad_field:payload.Production_W"),
    (envelope("sonnen/2", payload__Consumption_W=[1410]), "bad_field:payload.Consumption_W"),
    (envelope("sonnen/2", payload__GridFeedIn_W={}), "bad_field:payload.GridFeedIn_W"),
    (envelope("sonnen/2", payload__SystemStatus=1), "bad_field:payload.SystemStatus"),
    (envelope("sonnen/2", payload__Timestamp=DELETE), "missing_field:payload.Timestamp"),
    (envelope("sonnen/2", payload__Timestamp=None), "missing_field:payload.Timestamp"),
    (envelope("sonnen/2", payload__Timestamp=1795462200), "bad_field:payload.Timestamp"),
    (envelope("sonnen/2", payload__Timestamp="23.11.2026 20:30:00"), "bad_timestamp"),
    (envelope("sonnen/2", device_id="bad-tz"), "bad_timestamp"),  # registry zone unknown
    # sunspec/802 fields
    (envelope("sunspec/802", payload__models=[]), "bad_field:payload.models"),
    (envelope("sunspec/802", payload__models__802="x"), "bad_field:payload.models.802"),
    (envelope("sunspec/802", payload__models__203=[152, 1]), "bad_field:payload.models.203"),
    (envelope("sunspec/802", payload__models__802__SoC="6123"), "bad_field:payload.models.802.SoC"),
    (envelope("sunspec/802", payload__models__802__SoC_SF="-2"), "bad_field:payload.models.802.SoC_SF"),
    (envelope("sunspec/802", payload__models__802__W=True), "bad_field:payload.models.802.W"),
    (envelope("sunspec/802", payload__models__802__W_SF=1.5), "bad_field:payload.models.802.W_SF"),
    (envelope("sunspec/802", payload__models__802__WHRtg_SF=11), "bad_field:payload.models.802.WHRtg_SF"),
    (envelope("sunspec/802", payload__models__203__W="152"), "bad_field:payload.models.203.W"),
    (envelope("sunspec/802", payload__timestamp=DELETE), "missing_field:payload.timestamp"),
    (envelope("sunspec/802", payload__timestamp="1795462493"), "bad_field:payload.timestamp"),
    (envelope("sunspec/802", payload__timestamp=True), "bad_field:payload.timestamp"),
    (NAN_PAYLOAD_TIME, "bad_timestamp"),
    # future and stale, boundaries exclusive
    (envelope("sunspec/802", payload__timestamp=1795462500 + 301), "future_timestamp"),
    (envelope("tesla-gateway/1", received_at="2026-11-23T19:24:59.597Z"), "future_timestamp"),
    (envelope("sunspec/802", payload__timestamp=1795462500 - 86_401), "stale"),
    (envelope("sunspec/802", payload__timestamp=10**400), "future_timestamp"),
    (envelope("sunspec/802", payload__timestamp=-(10**400)), "stale"),
    (envelope("sunspec/802", payload__timestamp=1e300), "future_timestamp"),
    (envelope("sunspec/802", payload__timestamp=1.7e305), "future_timestamp"),  # its milliseconds overflow
    (envelope("sunspec/802", payload__timestamp=-1.7e305), "stale"),
    (envelope("sonnen/2", payload__Timestamp="2026-11-22 20:29:59"), "stale"),
]


@pytest.mark.parametrize(("doc", "reason"), REJECTIONS)
def test_each_reason_code(doc, reason):
    result = run(doc) if doc is not None else canonicalize(None, POS, ASSETS)
    assert isinstance(result, Rejection)
    assert (result.reason, result.source_topic, result.source_partition, result.source_offset) == (
        reason, "telemetry.raw", 3, 17)
    assert result.detail and result.detail.encode("utf-8")
    assert result.raw == (b"" if doc is None else doc if isinstance(doc, bytes) else raw(doc))


@pytest.mark.parametrize(("doc", "expected_ts"), [
    (envelope("sunspec/802", payload__timestamp=1795462500 + 300), (1795462500 + 300) * 1000),
    (envelope("sunspec/802", payload__timestamp=1795462500 - 86_400), (1795462500 - 86_400) * 1000),
    (envelope("tesla-gateway/1", received_at="2026-11-23T19:24:59.598Z"), 1795462199598),
])
def test_future_and_stale_limits_are_exclusive(doc, expected_ts):
    assert run(doc)["ts"] == expected_ts


@pytest.mark.parametrize(("doc", "device_id"), [
    (envelope("sonnen/2", device_id=5), None),
    (envelope("sonnen/2", device_id="sb 1"), None),
    (envelope("sonnen/2", dialect=None), "sb-000001"),
    (envelope("sonnen/2", device_id="sb-999999"), "sb-999999"),
    (envelope("sonnen/2", payload__USOC="x"), "sb-000001"),
])
def test_rejection_names_the_device_once_its_id_is_valid(doc, device_id):
    assert run(doc).device_id == device_id


# ---------------------------------------------------------------- check order: the first failure decides

ORDER = [
    pytest.param(envelope("sonnen/2", device_id=7, dialect="nope"), "bad_field:device_id", id="device-before-dialect"),
    pytest.param(envelope("sonnen/2", device_id=None, payload=None), "missing_field:device_id", id="device-first"),
    pytest.param(envelope("sonnen/2", dialect=[], received_at=DELETE), "bad_field:dialect", id="dialect-type-2nd"),
    pytest.param(envelope("sonnen/2", received_at="soon", payload=[]), "bad_field:received_at", id="received-3rd"),
    pytest.param(envelope("sonnen/2", dialect="nope", payload=DELETE), "missing_field:payload",
                 id="payload-before-dialect-value"),
    pytest.param(envelope("sonnen/2", dialect="nope", device_id="sb-999999"), "unknown_dialect",
                 id="dialect-before-device"),
    pytest.param(envelope("sonnen/2", device_id="sb-999999", payload__USOC="x"), "unknown_device",
                 id="device-before-fields"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__site__instant_power="x", payload__soe=[]),
                 "bad_field:payload.aggregates.site.instant_power", id="tesla-document-order"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=None,
                          payload__aggregates__solar__instant_power="x"),
                 "bad_field:payload.aggregates.solar.instant_power", id="tesla-reading-time-last"),
    pytest.param(envelope("sonnen/2", payload__Timestamp="garbage", payload__SystemStatus=False),
                 "bad_field:payload.SystemStatus", id="sonnen-reading-time-last"),
    pytest.param(envelope("sonnen/2", payload__USOC="x", payload__GridFeedIn_W="y"), "bad_field:payload.USOC",
                 id="sonnen-document-order"),
    pytest.param(envelope("sunspec/802", payload__timestamp=None, payload__models__802__SoC="x"),
                 "bad_field:payload.models.802.SoC", id="sunspec-reading-time-last"),
    pytest.param(envelope("sunspec/802", payload__models__802__W="x", payload__models__802__SoC_SF="y"),
                 "bad_field:payload.models.802.SoC_SF", id="sunspec-document-order"),
    pytest.param(envelope("sunspec/802", payload__timestamp=1795462500 + 999, payload__models__203__W="x"),
                 "bad_field:payload.models.203.W", id="fields-before-future"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time="nope",
                          received_at="2026-11-23T19:30:00.123Z"), "bad_timestamp", id="bad-time-before-future"),
]


@pytest.mark.parametrize(("doc", "reason"), ORDER)
def test_checks_run_in_spec_order(doc, reason):
    assert run(doc).reason == reason


# ---------------------------------------------------------------- repairs and their flags

def sonnen_with(**fields) -> dict:
    return envelope("sonnen/2", payload={**SONNEN, **fields})


REPAIRS = [
    # (document, {canonical field: expected value}, expected flags)
    pytest.param(sonnen_with(USOC=101.5), {"soc_pct": 100.0}, ["soc_clamped"], id="soc-above-100"),
    pytest.param(sonnen_with(USOC=102), {"soc_pct": 100.0}, ["soc_clamped"], id="soc-102-edge"),
    pytest.param(sonnen_with(USOC=-2), {"soc_pct": 0.0}, ["soc_clamped"], id="soc--2-edge"),
    pytest.param(sonnen_with(USOC=102.5), {"soc_pct": None}, ["soc_invalid"], id="soc-invalid-high"),
    pytest.param(sonnen_with(USOC=-3), {"soc_pct": None}, ["soc_invalid"], id="soc-invalid-low"),
    pytest.param(sonnen_with(USOC=100), {"soc_pct": 100.0}, [], id="soc-100-untouched"),
    pytest.param(envelope("tesla-gateway/1", payload__soe__percentage=4.0), {"soc_pct": 0.0}, ["soc_clamped"],
                 id="tesla-usable-before-clamp"),  # (4 - 5) / 0.95 = -1.05
    pytest.param(envelope("tesla-gateway/1", payload__soe__percentage=3.0), {"soc_pct": None}, ["soc_invalid"],
                 id="tesla-usable-invalid"),  # (3 - 5) / 0.95 = -2.1
    pytest.param(envelope("tesla-gateway/1", payload__soe__percentage=100.0), {"soc_pct": 100.0}, [],
                 id="tesla-full"),
    pytest.param(sonnen_with(USOC=float("nan")), {"soc_pct": None}, ["non_finite:soc_pct"], id="soc-nan"),
    pytest.param(sonnen_with(Pac_total_W=float("nan"), Production_W=None), {"battery_w": None},
                 ["non_finite:battery_w"], id="battery-nan"),
    pytest.param(sonnen_with(Production_W=float("inf")), {"solar_w": None}, ["non_finite:solar_w"],
                 id="solar-inf"),
    pytest.param(sonnen_with(Consumption_W=float("-inf")), {"load_w": None}, ["non_finite:load_w"],
                 id="load-minus-inf"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__site__instant_power=float("nan")),
                 {"grid_w": None}, ["non_finite:grid_w"], id="tesla-grid-nan"),
    pytest.param(envelope("sunspec/802", payload__models__802__WHRtg=float("inf")),
                 {"capacity_wh": 9800.0}, ["non_finite:capacity_wh"], id="capacity-inf-registry-used"),
    pytest.param(envelope("sunspec/802", payload__models__802__W_SF=float("nan")),
                 {"battery_w": None}, ["non_finite:battery_w"], id="sunspec-nan-scale-factor"),
    pytest.param(envelope("sunspec/802", payload__models__203__W=10**400), {"grid_w": None},
                 ["non_finite:grid_w"], id="integer-beyond-float"),
    pytest.param(sonnen_with(Production_W=-5), {"solar_w": 0.0}, ["solar_negative"], id="solar-negative"),
    pytest.param(sonnen_with(Consumption_W=-3, Pac_total_W=-15), {"load_w": 0.0}, ["load_negative"],
                 id="load-negative"),
    pytest.param(sonnen_with(Pac_total_W=13801, Consumption_W=13813), {"battery_w": None},
                 ["power_outlier:battery_w"], id="discharge-outlier"),  # > 3 x 4600
    pytest.param(sonnen_with(Pac_total_W=13800, Consumption_W=13812), {"battery_w": 13800.0}, [],
                 id="discharge-at-3x"),
    pytest.param(sonnen_with(Pac_total_W=-6001, Consumption_W=0, GridFeedIn_W=-6001), {"battery_w": None},
                 ["power_outlier:battery_w"], id="charge-outlier-uses-max-charge"),  # > 3 x 2000
    pytest.param(sonnen_with(Pac_total_W=-6000, Consumption_W=0, GridFeedIn_W=-6000), {"battery_w": -6000.0},
                 [], id="charge-at-3x"),
    pytest.param(sonnen_with(Production_W=300), {"solar_w": 300.0}, ["imbalance"], id="imbalance-250-floor"),
    pytest.param(sonnen_with(Production_W=250), {"solar_w": 250.0}, [], id="balance-at-250"),
    pytest.param(sonnen_with(Consumption_W=5000, Pac_total_W=4000, GridFeedIn_W=0, Production_W=1501),
                 {"load_w": 5000.0}, ["imbalance"], id="imbalance-10pct"),  # |1501 + 0 + 4000 - 5000| > 500
    pytest.param(sonnen_with(Consumption_W=5000, Pac_total_W=4000, GridFeedIn_W=0, Production_W=1500),
                 {"load_w": 5000.0}, [], id="balance-at-10pct"),
    pytest.param(sonnen_with(Production_W=None), {"solar_w": None}, [], id="imbalance-needs-all-four"),
    pytest.param(sonnen_with(USOC=101, Production_W=-400, Pac_total_W=float("nan")),
                 {"soc_pct": 100.0, "solar_w": 0.0, "battery_w": None},
                 ["soc_clamped", "non_finite:battery_w", "solar_negative"], id="flags-in-field-order"),
    pytest.param(sonnen_with(USOC=-1, Production_W=-20, Consumption_W=3000),
                 {"soc_pct": 0.0, "solar_w": 0.0}, ["soc_clamped", "solar_negative", "imbalance"],
                 id="imbalance-last-on-repaired-values"),
]


@pytest.mark.parametrize(("doc", "fields", "flags"), REPAIRS)
def test_repairs_are_flagged(doc, fields, flags):
    record = run(doc)
    assert not isinstance(record, Rejection), record
    assert {k: record[k] for k in fields} == fields
    assert record["flags"] == flags


# ---------------------------------------------------------------- values that are simply absent

NULLS = [
    pytest.param(sonnen_with(USOC=None), {"soc_pct": None}, id="null-value"),
    pytest.param(envelope("sonnen/2", payload={"Timestamp": "2026-11-23 20:30:00"}),
                 {"soc_pct": None, "battery_w": None, "solar_w": None, "load_w": None, "grid_w": None,
                  "grid_connected": None}, id="only-the-reading-time"),
    pytest.param(sonnen_with(RSOC="ignored"), {"soc_pct": 71.0}, id="rsoc-ignored"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__solar=DELETE), {"solar_w": None},
                 id="tesla-absent-meter"),
    pytest.param(envelope("tesla-gateway/1", payload__soe=None), {"soc_pct": None}, id="tesla-null-soe"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__site__last_communication_time="junk"),
                 {"grid_w": 160.2}, id="tesla-other-times-ignored"),
    pytest.param(envelope("sunspec/802", payload__models__802__SoC=-32768), {"soc_pct": None},
                 id="sunspec-not-implemented-int16"),
    pytest.param(envelope("sunspec/802", payload__models__802__W=65535), {"battery_w": None},
                 id="sunspec-not-implemented-uint16"),
    pytest.param(envelope("sunspec/802", payload__models__802__W_SF=-32768), {"battery_w": None},
                 id="sunspec-scale-factor-not-implemented"),
    pytest.param(envelope("sunspec/802", payload__models__802__SoC_SF=DELETE), {"soc_pct": None},
                 id="sunspec-scale-factor-missing"),
    pytest.param(envelope("sunspec/802", payload__models__802__WHRtg=65535), {"capacity_wh": 9800.0},
                 id="sunspec-capacity-falls-back-to-registry"),
    pytest.param(envelope("sunspec/802", payload__models__203=DELETE), {"grid_w": None}, id="sunspec-no-meter"),
    pytest.param(envelope("sunspec/802", payload__models=DELETE), {"soc_pct": None, "battery_w": None},
                 id="sunspec-no-models"),
]


@pytest.mark.parametrize(("doc", "fields"), NULLS)
def test_absent_or_null_values_become_null_without_a_flag(doc, fields):
    record = run(doc)
    assert {k: record[k] for k in fields} == fields
    assert record["flags"] == []


# ---------------------------------------------------------------- units, signs, clocks

VALUES = [
    pytest.param(envelope("tesla-gateway/1", payload__grid_status="SystemIslandedActive"),
                 {"grid_connected": False}, id="tesla-islanded"),
    pytest.param(envelope("tesla-gateway/1", payload__grid_status="SystemTransitionToGrid"),
                 {"grid_connected": False}, id="tesla-transition"),
    pytest.param(sonnen_with(SystemStatus="OffGrid"), {"grid_connected": False}, id="sonnen-off-grid"),
    pytest.param(sonnen_with(GridFeedIn_W=500, Consumption_W=898), {"grid_w": -500.0}, id="sonnen-export"),
    pytest.param(sonnen_with(GridFeedIn_W=0, Consumption_W=1398), {"grid_w": 0.0}, id="sonnen-zero-not-minus-zero"),
    pytest.param(envelope("sunspec/802", payload__models__802__W=0), {"battery_w": 0.0}, id="sunspec-zero"),
    pytest.param(envelope("sunspec/802", payload__models__802__W=30, payload__models__802__W_SF=1),
                 {"battery_w": -300.0}, id="sunspec-charging"),
    pytest.param(envelope("sunspec/802", payload__models__802__SoC=6123.0, payload__models__802__SoC_SF=-2.0),
                 {"soc_pct": 61.23}, id="sunspec-integral-floats"),
    pytest.param(envelope("sunspec/802", payload__timestamp=1795462493.9876), {"ts": 1795462493987},
                 id="sunspec-float-seconds-truncated"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=(
        "2026-11-23T11:29:59.5999999-08:00")), {"ts": 1795462199599}, id="tesla-truncated-not-rounded"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=(
        "2026-11-23T19:29:59Z")), {"ts": 1795462199000}, id="tesla-z-no-fraction"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=(
        "2026-11-24T01:29:59.5+06:00")), {"ts": 1795462199500}, id="tesla-short-fraction"),
    pytest.param(envelope("tesla-gateway/1", payload__aggregates__battery__last_communication_time=(
        "2026-11-23T11:29:59,598-0800")), {"ts": 1795462199598}, id="tesla-comma-basic-offset"),
    pytest.param(envelope("tesla-gateway/1", received_at="2026-11-23T19:30:00"), {"ts": 1795462199598},
                 id="naive-received-at-is-utc"),
    pytest.param(sonnen_with(Timestamp="2026-11-23T20:30:00+01:00"), {"ts": 1795462200000},
                 id="sonnen-explicit-offset"),
    pytest.param(sonnen_with(Timestamp="2026-11-23 20:30:00.999"), {"ts": 1795462200999},
                 id="sonnen-fraction"),
]


@pytest.mark.parametrize(("doc", "fields"), VALUES)
def test_units_signs_and_clocks(doc, fields):
    record = run(doc)
    assert {k: record[k] for k in fields} == fields


DST = [
    # Europe/Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice, first at +02:00
    pytest.param("2026-10-25 02:30:00", "2026-10-25T02:30:00+02:00", [], id="ambiguous-first-occurrence"),
    pytest.param("2026-10-25 01:59:59", "2026-10-25T01:59:59+02:00", [], id="before-fall-back"),
    pytest.param("2026-10-25 03:00:00", "2026-10-25T03:00:00+01:00", [], id="after-fall-back"),
    # springs forward 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist; read at the old +01:00
    pytest.param("2026-03-29 02:30:00", "2026-03-29T02:30:00+01:00", ["local_time_gap"], id="gap"),
    pytest.param("2026-03-29 01:59:59", "2026-03-29T01:59:59+01:00", [], id="before-gap"),
    pytest.param("2026-03-29 03:00:00", "2026-03-29T03:00:00+02:00", [], id="after-gap"),
    pytest.param("2026-07-01 12:00:00", "2026-07-01T12:00:00+02:00", [], id="summer"),
]


@pytest.mark.parametrize(("local", "instant", "flags"), DST)
def test_sonnen_local_time_across_dst(local, instant, flags):
    ts = utc_ms(instant)
    received = datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat()
    record = run(envelope("sonnen/2", received_at=received, payload={"Timestamp": local}))
    assert (record["ts"], record["flags"]) == (ts, flags)


def test_lord_howe_half_hour_gap_is_exact_to_the_minute():
    # Australia/Lord_Howe springs forward 30 minutes (02:00 -> 02:30 +11:00) on 2026-10-04
    assets = {"lh-1": Asset("lh-1", "s", "au/s", "Australia/Lord_Howe")}
    for local, instant, flags in [("2026-10-04 02:29:59", "2026-10-04T02:29:59+10:30", ["local_time_gap"]),
                                  ("2026-10-04 02:30:00", "2026-10-04T02:30:00+11:00", [])]:
        ts = utc_ms(instant)
        doc = {"device_id": "lh-1", "dialect": "sonnen/2",
               "received_at": datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat(),
               "payload": {"Timestamp": local}}
        record = canonicalize(raw(doc), POS, assets)
        assert (record["ts"], record["flags"]) == (ts, flags)


# ---------------------------------------------------------------- the fast timestamp path agrees with fromisoformat

@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)),
    st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["", ".", ","]),
    st.integers(min_value=0, max_value=9),
    st.sampled_from(["", "Z", "+00:00", "-08:00", "+05:45", "+14:00", "-0330", "+23:59"]),
)
def test_fast_iso_path_matches_the_reference_parser(moment, sep, mark, digits, offset):
    fraction = (mark + f"{moment.microsecond:06d}{moment.microsecond % 997:03d}"[:digits]) if mark and digits else ""
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + offset
    reference = parse_iso(text)
    offset_ms = None if reference.utcoffset() is None else reference.utcoffset() // ONE_MS
    expected = ((reference.replace(tzinfo=None) - datetime(1970, 1, 1)) // ONE_MS, offset_ms)
    assert iso_ms(text) == expected
    assert iso_ms(text) == expected  # second time through the warmed-up minute cache


# ---------------------------------------------------------------- dedup

def reading(ts: int) -> dict:
    return {"device_id": "pw-000123", "ts": ts}


DEDUP = [
    pytest.param([1000, 1000], [False, True], id="same-ts-dropped"),
    pytest.param([1000, 2000, 1000], [False, False, True], id="out-of-order-duplicate"),
    pytest.param([1000, 2000, 3000, 2000, 3000], [False, False, False, True, True], id="several"),
    pytest.param([0, 600_000, 0], [False, False, True], id="at-the-horizon-still-known"),
    pytest.param([0, 600_001, 0], [False, False, False], id="older-than-horizon-passes"),
    pytest.param([600_001, 0, 0], [False, False, False], id="late-never-remembered"),
    pytest.param([0, 1_000_000, 2_000_000, 3_000_000, 2_999_999, 3_000_000], [False] * 5 + [True],
                 id="after-pruning"),
]


@pytest.mark.parametrize(("times", "duplicates"), DEDUP)
def test_dedup_by_device_and_ts(times, duplicates):
    state, seen = None, []
    for ts in times:
        state, (out, duplicate) = dedup_step(state, reading(ts))
        assert (out is None) == duplicate
        seen.append(duplicate)
    assert seen == duplicates


def test_dedup_state_is_small_and_survives_a_snapshot():
    state = None
    for ts in range(0, 10_000_000, 1000):
        state, _ = dedup_step(state, reading(ts))
    assert isinstance(state, DedupState)
    assert len(state.seen) <= DEDUP_HORIZON_MS_DEFAULT // 1000 * 5 // 4 + 2
    restored = pickle.loads(pickle.dumps(state))
    assert dedup_step(restored, reading(9_999_000))[1] == (None, True)
    assert dedup_step(restored, reading(9_999_500))[1] == (reading(9_999_500), False)


def test_dedup_horizon_is_configurable():
    state, _ = dedup_step(None, reading(0), horizon_ms=10)
    state, _ = dedup_step(state, reading(11), horizon_ms=10)
    assert dedup_step(state, reading(0), horizon_ms=10)[1] == (reading(0), False)


# ---------------------------------------------------------------- the platform's clock


def received_by_broker(ms: int):
    """A source position with the Kafka timestamp at which the platform received the message."""
    from bytewax.connectors.kafka import KafkaSourceMessage

    return KafkaSourceMessage(b"k", b"", "telemetry.raw", partition=3, offset=17, timestamp=(1, ms))


def test_a_device_and_gateway_clock_ten_days_ahead_is_future_timestamp_by_the_platforms_clock():
    # received_at and the reading time agree with each other, 10 days after the broker took the message
    ten_days = 10 * 86_400_000
    platform_ms = iso_ms(RECEIVED["tesla-gateway/1"])[0] - ten_days
    result = canonicalize(raw(envelope("tesla-gateway/1")), received_by_broker(platform_ms), ASSETS)
    assert isinstance(result, Rejection) and result.reason == "future_timestamp"
    assert "platform received it" in result.detail and result.source_timestamp == platform_ms


def test_a_reading_far_behind_the_platforms_clock_is_stale():
    platform_ms = iso_ms(RECEIVED["sonnen/2"])[0] + 2 * 86_400_000
    result = canonicalize(raw(envelope("sonnen/2")), received_by_broker(platform_ms), ASSETS)
    assert isinstance(result, Rejection) and result.reason == "stale"


def test_a_reading_on_time_by_both_clocks_is_accepted():
    platform_ms = iso_ms(RECEIVED["tesla-gateway/1"])[0] + 150
    assert not isinstance(canonicalize(raw(envelope("tesla-gateway/1")), received_by_broker(platform_ms), ASSETS),
                          Rejection)


def test_a_simulation_faster_than_real_time_can_turn_the_platform_clock_check_off():
    # `vpp demo --speed 10` through the gateway: event time runs ahead of the gateway's real clock by design
    ten_days = 10 * 86_400_000
    platform_ms = iso_ms(RECEIVED["tesla-gateway/1"])[0] - ten_days
    result = canonicalize(raw(envelope("tesla-gateway/1")), received_by_broker(platform_ms), ASSETS, platform_clock=False)
    assert not isinstance(result, Rejection)
