"""Each dialect decodes back to the truth, with a small independent decoder written from the spec."""

import json
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.simulator.dialects import Reading, encode_envelope, envelope_bytes
from devtools.simulator.faults import inject_nan
from devtools.simulator.tree import DIALECTS, build_fleet

FLEET = build_fleet(60, depth=5, fanout=6, seed=3)
BY_DIALECT = {d: [dev for dev in FLEET.devices if dev.dialect == d] for d in DIALECTS}

# -- decoders written from spec/telemetry.md section 2 -----------------------------------

_TESLA_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{9})([+-])(\d\d):(\d\d)")


def decode_tesla(payload, _tz):
    agg = payload["aggregates"]
    m = _TESLA_TIME.fullmatch(agg["battery"]["last_communication_time"])
    y, mo, d, h, mi, s, frac, sign, oh, om = m.groups()
    offset = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone(offset))
    ns = int(local.timestamp()) * 1_000_000_000 + int(frac)
    return {
        "ns": ns,
        "soc_pct": (payload["soe"]["percentage"] - 5) / 0.95,
        "battery_w": agg["battery"]["instant_power"],
        "solar_w": agg["solar"]["instant_power"],
        "load_w": agg["load"]["instant_power"],
        "grid_w": agg["site"]["instant_power"],
    }


def decode_sonnen(payload, tz):
    local = datetime.strptime(payload["Timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(tz), fold=0)
    return {
        "ns": int(local.timestamp()) * 1_000_000_000,
        "soc_pct": payload["USOC"],
        "battery_w": payload["Pac_total_W"],
        "solar_w": payload["Production_W"],
        "load_w": payload["Consumption_W"],
        "grid_w": -payload["GridFeedIn_W"],
    }


def decode_sunspec(payload, _tz):
    def reg(model, name, sf_name=None):
        value = payload["models"][model][name]
        return value * 10 ** payload["models"][model][sf_name or f"{name}_SF"]

    meter = "203" in payload["models"]
    return {
        "ns": payload["timestamp"] * 1_000_000_000,
        "soc_pct": reg("802", "SoC"),
        "battery_w": -reg("802", "W"),
        "solar_w": None,
        "load_w": None,
        "grid_w": reg("203", "W") if meter else None,
        "capacity_wh": reg("802", "WHRtg"),
    }


DECODERS = {"tesla-gateway/1": decode_tesla, "sonnen/2": decode_sonnen, "sunspec/802": decode_sunspec}
#: Rounding of each dialect: (W, SoC percentage points, reading time in ns).
TOLERANCE = {"tesla-gateway/1": (0.051, 1e-3, 0), "sonnen/2": (0.51, 0.51, 1_000_000_000)}


def _tolerance(device):
    if device.dialect == "sunspec/802":
        return (0.5 * 10 ** max(device.w_sf, device.meter_sf) + 1e-9, 0.006, 1_000_000_000)
    return TOLERANCE[device.dialect]


def _ambiguous_second_occurrence(ns, tz):
    """True when the local wall time of ``ns`` is the repeated hour's second pass (fold=1)."""
    local = datetime.fromtimestamp(ns // 1_000_000_000, ZoneInfo(tz))
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


readings = st.builds(
    dict,
    ns=st.integers(1_600_000_000_000_000_000, 2_000_000_000_000_000_000),
    soc=st.floats(0, 100),
    battery=st.floats(-11_500, 11_500),
    solar=st.floats(0, 8_000),
    load=st.floats(0, 9_000),
)


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=200)
@given(values=readings, pick=st.integers(0, 10_000))
def test_every_dialect_decodes_back_to_the_truth(dialect, values, pick):
    device = BY_DIALECT[dialect][pick % len(BY_DIALECT[dialect])]
    grid = values["load"] - values["solar"] - values["battery"]
    truth = Reading(device.device_id, values["ns"], values["soc"], values["battery"], values["solar"], values["load"], grid)
    envelope = orjson.loads(envelope_bytes(encode_envelope(device, truth, values["ns"] // 1_000_000 + 120)))
    got = DECODERS[dialect](envelope["payload"], device.timezone)
    watts, soc_pp, time_ns = _tolerance(device)

    assert abs(got["soc_pct"] - truth.soc_pct) <= soc_pp
    assert abs(got["battery_w"] - truth.battery_w) <= watts
    for name in ("solar_w", "load_w", "grid_w"):
        if got[name] is not None:
            assert abs(got[name] - getattr(truth, name)) <= watts, name
    delta = truth.reading_ns - got["ns"]
    if dialect == "sonnen/2" and _ambiguous_second_occurrence(truth.reading_ns, device.timezone):
        delta -= 3600 * 1_000_000_000  # the spec maps the repeated local hour to its first occurrence
    assert 0 <= delta <= time_ns
    if dialect == "sunspec/802":
        assert got["capacity_wh"] == device.asset.capacity_wh


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_envelope_names_device_dialect_and_edge_receipt_time(dialect):
    device = BY_DIALECT[dialect][0]
    truth = Reading(device.device_id, 1_795_462_493_598_548_052, 61.23, -2500.0, 3100.0, 860.2, 260.2)
    envelope = orjson.loads(envelope_bytes(encode_envelope(device, truth, 1_795_462_493_723)))
    assert list(envelope) == ["device_id", "dialect", "received_at", "payload"]
    assert envelope["device_id"] == device.device_id
    assert envelope["dialect"] == dialect
    assert envelope["received_at"] == "2026-11-23T19:34:53.723Z"


def test_tesla_times_carry_the_site_offset_and_nanoseconds():
    device = next(d for d in BY_DIALECT["tesla-gateway/1"] if d.timezone == "America/Los_Angeles")
    truth = Reading(device.device_id, 1_795_462_199_598_548_052, 69.1, -2400.0, 3100.0, 860.2, 160.2)
    payload = encode_envelope(device, truth, 0)["payload"]
    assert payload["aggregates"]["battery"]["last_communication_time"] == "2026-11-23T11:29:59.598548052-08:00"
    assert payload["soe"]["percentage"] == pytest.approx(69.1 * 0.95 + 5)
    assert payload["grid_status"] == "SystemGridConnected"


def test_sonnen_exports_are_positive_feed_in_and_discharge_is_positive():
    device = BY_DIALECT["sonnen/2"][0]
    truth = Reading(device.device_id, 1_795_462_200_000_000_000, 71.4, 1398.0, 0.0, 1410.0, 12.0)
    payload = encode_envelope(device, truth, 0)["payload"]
    assert (payload["Pac_total_W"], payload["GridFeedIn_W"], payload["USOC"]) == (1398, -12, 71)
    assert payload["SystemStatus"] == "OnGrid"


def test_sunspec_battery_register_counts_charging_as_positive():
    device = BY_DIALECT["sunspec/802"][0]
    truth = Reading(device.device_id, 1_795_462_493_000_000_000, 61.23, -2500.0, 0.0, 0.0, 2500.0)
    model = encode_envelope(device, truth, 0)["payload"]["models"]["802"]
    assert model["W"] * 10 ** model["W_SF"] == 2500
    assert (model["SoC"], model["SoC_SF"]) == (6123, -2)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_nan_power_is_the_bare_json_literal_strict_parsers_refuse(dialect):
    import random

    device = BY_DIALECT[dialect][0]
    truth = Reading(device.device_id, 1_795_462_493_000_000_000, 50.0, 100.0, 200.0, 300.0, 0.0)
    envelope = encode_envelope(device, truth, 0)
    envelope["payload"], path = inject_nan(envelope["payload"], dialect, random.Random(1))
    raw = envelope_bytes(envelope, allow_nan=True)
    assert b"NaN" in raw
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    node = json.loads(raw)
    for part in path.split("."):
        node = node[part]
    assert node != node  # NaN
