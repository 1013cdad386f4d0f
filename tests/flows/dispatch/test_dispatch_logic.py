"""Allocation rules of spec fleet.md section 2, as properties over random fleets and as table rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flows.dispatch.logic import DeviceArrays, allocate_setpoints, node_covers, validate_command

HOUR_MS = 3_600_000
NOW = 1_000_000_000
STALENESS = 60_000


def fleet(rows: list[tuple]) -> DeviceArrays:
    """rows: (soc_pct, capacity_wh, reserve_pct, max_charge_w, max_discharge_w, seconds_silent, online)."""
    cols = list(zip(*rows)) if rows else [()] * 7
    return DeviceArrays.build([f"d{i}" for i in range(len(rows))], soc_pct=cols[0], capacity_wh=cols[1],
                              reserve_pct=cols[2], max_charge_w=cols[3], max_discharge_w=cols[4],
                              last_seen_ms=[NOW - s * 1000 for s in cols[5]], online=cols[6])


device_rows = st.tuples(
    st.one_of(st.floats(0, 100), st.just(float("nan"))),  # soc_pct (nan: never reported a SoC)
    st.sampled_from([5000.0, 9800.0, 13500.0, 16000.0]),
    st.floats(0, 30),
    st.sampled_from([0.0, 2500.0, 5000.0, 7600.0]),
    st.sampled_from([0.0, 2500.0, 5000.0, 11500.0]),
    st.sampled_from([0, 5, 59, 61, 600]),  # seconds since last heard: > 60 is stale
    st.booleans(),
)
fleets = st.lists(device_rows, max_size=60)
targets = st.one_of(st.floats(-400_000, 400_000), st.sampled_from([0.0, 1.0, -1.0, 1e9, -1e9]))
durations_ms = st.sampled_from([60_000, 15 * 60_000, HOUR_MS, 4 * HOUR_MS])


def _energy_caps(d: DeviceArrays, discharge: bool, hours: float) -> np.ndarray:
    soc = np.clip(d.soc_pct, 0, 100)
    energy = (np.maximum(0, soc - d.reserve_pct) if discharge else 100 - soc) / 100 * d.capacity_wh
    return energy / hours


@settings(max_examples=400, deadline=None)
@given(fleets, targets, durations_ms)
def test_allocation_obeys_every_rule(rows, target_w, duration_ms):
    d = fleet(rows)
    a = allocate_setpoints(d, target_w, NOW, NOW + duration_ms, NOW, staleness_ms=STALENESS)
    p = a.setpoints_w
    hours = duration_ms / HOUR_MS
    eligible = d.online & (NOW - d.last_seen_ms <= STALENESS) & np.isfinite(d.soc_pct)
    # only online, non-stale devices with a known SoC
    assert np.all(p[~eligible] == 0)
    # the target's sign; no device beyond its rated limit, nor beyond what its energy sustains until end
    if target_w > 0:
        assert np.all(p >= 0) and np.all(p <= d.max_discharge_w + 1e-9)
        assert np.all(p[eligible] <= _energy_caps(d, True, hours)[eligible] * (1 + 1e-9) + 1e-9)
    elif target_w < 0:
        assert np.all(p <= 0) and np.all(-p <= d.max_charge_w + 1e-9)
        assert np.all(-p[eligible] <= _energy_caps(d, False, hours)[eligible] * (1 + 1e-9) + 1e-9)
    else:
        assert np.all(p == 0)
    # allocated = min(|target|, capability) with the target's sign; the set points sum to it within 1 W
    assert abs(abs(a.allocated_w) - min(abs(target_w), a.capability_w)) <= 1.0
    assert abs(p.sum() - a.allocated_w) <= 1.0
    assert a.shortfall_w >= 0 and abs(a.shortfall_w - max(0.0, abs(target_w) - abs(a.allocated_w))) < 1e-6


@settings(max_examples=300, deadline=None)
@given(fleets, targets)
def test_split_prefers_devices_with_more_energy_or_headroom(rows, target_w):
    assume(target_w != 0)
    d = fleet(rows)
    a = allocate_setpoints(d, target_w, NOW, NOW + HOUR_MS, NOW, staleness_ms=STALENESS)
    p = np.abs(a.setpoints_w)
    discharge = target_w > 0
    soc = np.clip(d.soc_pct, 0, 100)
    usable = (np.maximum(0, soc - d.reserve_pct) if discharge else 100 - soc) / 100 * d.capacity_wh
    limit = d.max_discharge_w if discharge else d.max_charge_w
    eligible = d.online & (NOW - d.last_seen_ms <= STALENESS) & np.isfinite(d.soc_pct)
    idx = np.flatnonzero(eligible)
    for i in idx:
        for j in idx:
            # i has at least j's usable energy (headroom) and at least its limit: i never gets less
            if usable[i] >= usable[j] and limit[i] >= limit[j]:
                assert p[i] >= p[j] - 1e-6


def test_soc_converges_proportional_to_usable_energy():
    # two identical batteries, one fuller: the fuller one discharges harder, in proportion to its usable energy
    d = fleet([(90, 10000, 10, 5000, 5000, 0, True), (30, 10000, 10, 5000, 5000, 0, True)])
    a = allocate_setpoints(d, 2000, NOW, NOW + HOUR_MS, NOW)
    assert a.setpoints_w[0] / a.setpoints_w[1] == pytest.approx(80 / 20)
    assert a.setpoints_w.sum() == pytest.approx(2000)


@pytest.mark.parametrize(
    "case, rows, target_w, expect_allocated, expect_devices",
    [
        ("empty node", [], 5000, 0.0, 0),
        ("all offline", [(80, 10000, 10, 5000, 5000, 0, False)] * 3, 5000, 0.0, 0),
        ("all stale", [(80, 10000, 10, 5000, 5000, 61, True)] * 3, 5000, 0.0, 0),
        ("beyond capability: every device at its limit", [(80, 10000, 10, 5000, 5000, 0, True)] * 3, 1e9, 15000.0, 3),
        ("at reserve: nothing to discharge", [(10, 10000, 10, 5000, 5000, 0, True)] * 2, 1000, 0.0, 0),
        ("full: nothing to charge", [(100, 10000, 10, 5000, 5000, 0, True)] * 2, -1000, 0.0, 0),
        ("energy-bound: 1 kWh over 1 h is 1 kW", [(20, 10000, 10, 5000, 5000, 0, True)], 5000, 1000.0, 1),
        ("charge within headroom", [(50, 10000, 10, 5000, 5000, 0, True)] * 2, -4000, -4000.0, 2),
    ],
)
def test_allocation_table(case, rows, target_w, expect_allocated, expect_devices):
    a = allocate_setpoints(fleet(rows), target_w, NOW, NOW + HOUR_MS, NOW)
    assert a.allocated_w == pytest.approx(expect_allocated), case
    assert a.devices == expect_devices, case


def test_no_time_left_allocates_nothing():
    d = fleet([(80, 10000, 10, 5000, 5000, 0, True)])
    assert allocate_setpoints(d, 1000, NOW - HOUR_MS, NOW, NOW).allocated_w == 0.0


def test_hundred_thousand_devices_sum_within_a_watt():
    rng = np.random.default_rng(1)
    n = 100_000
    d = DeviceArrays.build([f"d{i}" for i in range(n)], soc_pct=rng.uniform(0, 100, n),
                           capacity_wh=rng.choice([5000, 10000, 13500], n), reserve_pct=rng.integers(10, 21, n),
                           max_charge_w=rng.choice([2500, 5000], n), max_discharge_w=rng.choice([2500, 5000, 11500], n),
                           last_seen_ms=np.full(n, NOW), online=rng.random(n) < 0.9)
    for target in (1e8, -1e8, 123_456_789.5):
        a = allocate_setpoints(d, target, NOW, NOW + HOUR_MS, NOW)
        assert abs(a.setpoints_w.sum() - np.sign(target) * min(abs(target), a.capability_w)) <= 1.0


@pytest.mark.parametrize("node, region_path, device_id, covered", [
    ("us", "us/ca/pge/94110/site-1", "pw-1", True),
    ("us/ca", "us/ca/pge/94110/site-1", "pw-1", True),
    ("us/c", "us/ca/pge/94110/site-1", "pw-1", False),
    ("us/ca/pge/94110/site-1", "us/ca/pge/94110/site-1", "pw-1", True),
    ("us/ca/pge/94110/site-1/pw-1", "us/ca/pge/94110/site-1", "pw-1", True),
    ("us/ca/pge/94110/site-1/pw-2", "us/ca/pge/94110/site-1", "pw-1", False),
    ("eu", "us/ca/pge/94110/site-1", "pw-1", False),
])
def test_node_covers(node, region_path, device_id, covered):
    assert node_covers(node, region_path, device_id) is covered


@pytest.mark.parametrize("command, reason_part", [
    ({"node_path": "us", "target_w": 1.0, "start": 10, "end": 10}, "end (10) is not after start"),
    ({"node_path": "us", "target_w": 1.0, "start": 10, "end": 5}, "not after start"),
    ({"node_path": "us", "target_w": 1.0, "start": 10, "end": 50}, "already past"),
    ({"node_path": "/", "target_w": 1.0, "start": 10, "end": 500}, "node_path is empty"),
    ({"node_path": "us", "target_w": float("nan"), "start": 10, "end": 500}, "not a finite number"),
    ({"node_path": "us", "target_w": 1.0, "start": 10, "end": 500}, None),
    ({"node_path": "us", "target_w": 1.0, "start": 100, "end": 100 + 7 * 86_400_000}, None),
    ({"node_path": "us", "target_w": 1.0, "start": 100, "end": 101 + 7 * 86_400_000}, "longer than the 168 h"),
    # `vpp dispatch send --minutes 1e12`: an end in the year 1,903,351 once stopped the flow for good
    ({"node_path": "us", "target_w": 1.0, "start": 100, "end": 60_001_796_608_090_183}, "longer than"),
    ({"node_path": "us", "target_w": 1.0, "start": 101 + 31 * 86_400_000, "end": 200 + 31 * 86_400_000},
     "more than the 31 days"),
])
def test_validate_command(command, reason_part):
    reason = validate_command(command, now_ms=100)
    assert (reason is None) if reason_part is None else (reason_part in reason)
