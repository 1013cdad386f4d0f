"""Whatever a gateway sends, canonicalization answers: a canonical record or a DLQ record, never an exception."""

from __future__ import annotations

import copy
import io
import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.canonicalize.logic import Asset, Rejection, SourcePosition, canonicalize, dedup_step
from documents import DELETE, edited

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
CANONICAL_SCHEMA = fastavro.parse_schema(json.loads((SCHEMAS / "canonical_reading.avsc").read_text()))
DLQ_SCHEMA = fastavro.parse_schema(json.loads((SCHEMAS / "dlq_record.avsc").read_text()))
CANONICAL_FIELDS = [f["name"] for f in json.loads((SCHEMAS / "canonical_reading.avsc").read_text())["fields"]]
POS = SourcePosition("telemetry.raw", 0, 42)
ASSETS = {
    "pw-1": Asset("pw-1", "site-1", "us/ca/site-1", "America/Los_Angeles", 13500.0, 5000.0, 5000.0, 5.0),
    "sb-1": Asset("sb-1", "site-2", "de/by/site-2", "Europe/Berlin", 10000.0, 4600.0, 4600.0, 0.0),
    "ss-1": Asset("ss-1", "site-3", "us/tx/site-3", "America/Chicago", None, 5000.0, 5000.0, 10.0),
}
REASON = re.compile(
    r"malformed_json|unknown_dialect|unknown_device|bad_timestamp|future_timestamp|stale"
    r"|(missing_field|bad_field):(device_id|dialect|received_at|payload(\.[A-Za-z0-9_]+)*)"
)
FLAG = re.compile(
    r"soc_clamped|soc_invalid|solar_negative|load_negative|imbalance|local_time_gap|power_outlier:battery_w"
    r"|non_finite:(soc_pct|battery_w|solar_w|load_w|grid_w|capacity_wh)"
)
RECEIVED = "2026-11-23T19:35:00.000Z"
EXAMPLES = [
    {"device_id": "pw-1", "dialect": "tesla-gateway/1", "received_at": RECEIVED, "payload": {"aggregates": {
        "site": {"last_communication_time": "2026-11-23T11:29:59.598548052-08:00", "instant_power": 160.2},
        "battery": {"last_communication_time": "2026-11-23T11:29:59.598548052-08:00", "instant_power": -2400.0},
        "load": {"last_communication_time": "2026-11-23T11:29:59.598548052-08:00", "instant_power": 860.2},
        "solar": {"last_communication_time": "2026-11-23T11:29:59.598548052-08:00", "instant_power": 3100.0}},
        "soe": {"percentage": 69.1}, "grid_status": "SystemGridConnected"}},
    {"device_id": "sb-1", "dialect": "sonnen/2", "received_at": RECEIVED, "payload": {
        "Timestamp": "2026-11-23 20:30:00", "USOC": 71, "RSOC": 73, "Pac_total_W": 1398, "Production_W": 0,
        "Consumption_W": 1410, "GridFeedIn_W": -12, "SystemStatus": "OnGrid"}},
    {"device_id": "ss-1", "dialect": "sunspec/802", "received_at": RECEIVED, "payload": {
        "timestamp": 1795462493, "models": {
            "802": {"SoC": 6123, "SoC_SF": -2, "W": -25, "W_SF": 2, "WHRtg": 135, "WHRtg_SF": 2},
            "203": {"W": 152, "W_SF": 1}}}},
]
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)

json_scalars = (
    st.none() | st.booleans() | st.text(max_size=30)
    | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-32768, 65535, 0, -0.0, 1e308, 2**64, "", "2026-11-23T19:30:00Z", "2026-11-23 20:30:00"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# literals a lenient or broken gateway writes that stdlib json.dumps never would
RAW_LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 400, b"-" + b"9" * 30,
                b"123456789012345678901234567890.5", b"1e-400", b"[" * 3000 + b"]" * 3000,
                b"{\"a\":" * 2000 + b"1" + b"}" * 2000, b'"\\ud800"', b'"\\u0000"', b"0.1e99999"]


def paths(doc, prefix=()):
    """Every dotted location inside an envelope, containers included."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, prefix + (key,))


_MARK = "\u2603mark\u2603"


def check(data: bytes):
    """The invariants every result satisfies; returns the result."""
    result = canonicalize(data, POS, ASSETS)
    if isinstance(result, Rejection):
        assert REASON.fullmatch(result.reason), result.reason
        assert result.raw == (data if data is not None else b"")
        assert result.detail.encode("utf-8")
        assert result.device_id is None or result.device_id in ASSETS or re.fullmatch(
            r"[A-Za-z0-9._:-]{1,64}", result.device_id)
        fastavro.schemaless_writer(io.BytesIO(), DLQ_SCHEMA, result.to_record())
        return result
    assert type(result) is dict and list(result) == CANONICAL_FIELDS
    assert result["device_id"] in ASSETS and type(result["ts"]) is int
    for name in ("soc_pct", "battery_w", "solar_w", "load_w", "grid_w", "capacity_wh"):
        value = result[name]
        assert value is None or (type(value) is float and math.isfinite(value)), (name, value)
    assert result["soc_pct"] is None or 0.0 <= result["soc_pct"] <= 100.0
    assert result["solar_w"] is None or result["solar_w"] >= 0.0
    assert result["load_w"] is None or result["load_w"] >= 0.0
    assert result["grid_connected"] in (None, True, False)
    assert all(FLAG.fullmatch(flag) for flag in result["flags"]), result["flags"]
    assert len(set(result["flags"])) == len(result["flags"])
    fastavro.schemaless_writer(io.BytesIO(), CANONICAL_SCHEMA, result)
    return result


@RELAXED
@given(st.binary(max_size=300))
def test_random_bytes(data):
    check(data)


@RELAXED
@given(json_values)
def test_random_json_documents(value):
    check(json.dumps(value, allow_nan=True).encode())


@RELAXED
@given(st.sampled_from(EXAMPLES), st.data())
def test_any_field_replaced_by_any_json_value(example, data):
    where = data.draw(st.sampled_from([p for p in paths(example) if p]))
    value = data.draw(st.one_of(json_values, st.just(DELETE)))
    check(json.dumps(edited(example, where, value), allow_nan=True).encode())


@RELAXED
@given(st.sampled_from(EXAMPLES), st.data())
def test_any_field_replaced_by_a_nonstandard_literal(example, data):
    where = data.draw(st.sampled_from([p for p in paths(example) if p]))
    literal = data.draw(st.sampled_from(RAW_LITERALS))
    text = json.dumps(edited(example, where, _MARK)).encode()
    check(text.replace(json.dumps(_MARK).encode(), literal))


@RELAXED
@given(st.sampled_from(EXAMPLES), st.data())
def test_invalid_utf8_and_truncation(example, data):
    text = json.dumps(example).encode()
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    junk = data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xe2\x82"]))
    check(text[:at] + junk + text[at:])
    check(text[:at])


@RELAXED
@given(st.sampled_from(EXAMPLES), st.integers(min_value=1, max_value=12_000), st.data())
def test_deep_nesting_anywhere(example, depth, data):
    where = data.draw(st.sampled_from([p for p in paths(example) if p]))
    opener, closer = data.draw(st.sampled_from([(b"[", b"]"), (b'{"k":', b"}")]))
    text = json.dumps(edited(example, where, _MARK)).encode()
    nested = opener * depth + b"0" + closer * depth
    check(text.replace(json.dumps(_MARK).encode(), nested))
    check(text.replace(json.dumps(_MARK).encode(), opener * depth))


def test_deep_nesting_whole_message():
    for depth in (500, 1023, 1024, 1025, 5000, 10_000, 100_000):
        assert check(b"[" * depth + b"]" * depth).reason == "malformed_json"
        assert check(b"[" * depth).reason == "malformed_json"
        assert check(b'{"a":' * depth + b"1" + b"}" * depth).reason in ("malformed_json", "missing_field:device_id")


def test_empty_payloads():
    for example in EXAMPLES:
        check(json.dumps({**example, "payload": {}}).encode())
    for data in (b"", b"{}", b" ", b"\n", b"[]", b"{\"payload\": {}}"):
        check(data)


# ---------------------------------------------------------------- counts add up through dedup

BASE_S = 1795462440  # 19:34:00Z, a minute before RECEIVED


def tesla(ts_s, value):
    moment = datetime.fromtimestamp(ts_s, timezone.utc).astimezone(timezone(timedelta(hours=-8)))
    doc = copy.deepcopy(EXAMPLES[0])
    doc["payload"]["aggregates"]["battery"] = {"last_communication_time": moment.isoformat(),
                                               "instant_power": value}
    return doc


def sonnen(ts_s, value):
    local = datetime.fromtimestamp(ts_s, timezone.utc).astimezone(timezone(timedelta(hours=1)))
    doc = copy.deepcopy(EXAMPLES[1])
    doc["payload"].update(Timestamp=local.strftime("%Y-%m-%d %H:%M:%S"), Pac_total_W=value)
    return doc


def sunspec(ts_s, value):
    doc = copy.deepcopy(EXAMPLES[2])
    doc["payload"].update(timestamp=ts_s)
    doc["payload"]["models"]["802"]["W"] = value
    return doc


readings = st.tuples(
    st.sampled_from([tesla, sonnen, sunspec]),
    st.integers(min_value=-5, max_value=5),  # few distinct times: many duplicates
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-20000, 20000), st.text(max_size=3)),
).map(lambda t: json.dumps(t[0](BASE_S + t[1], t[2]), allow_nan=True).encode())
messages = st.lists(st.one_of(readings, readings, st.binary(max_size=40), json_values.map(
    lambda v: json.dumps(v, allow_nan=True).encode())), max_size=60)


@RELAXED
@given(messages)
def test_in_equals_canonical_plus_dlq_plus_duplicates(batch):
    states, canonical, dlq, duplicates = {}, [], [], 0
    for data in batch:
        result = check(data)
        if isinstance(result, Rejection):
            dlq.append(result)
            continue
        key = result["device_id"]
        states[key], (out, duplicate) = dedup_step(states.get(key), result)
        if duplicate:
            duplicates += 1
        else:
            canonical.append(out)
    assert len(batch) == len(canonical) + len(dlq) + duplicates
    # every time lies within the horizon, so each (device_id, ts) comes out exactly once
    assert len({(r["device_id"], r["ts"]) for r in canonical}) == len(canonical)
