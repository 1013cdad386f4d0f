"""Faults happen at roughly the configured rates, look like the real thing, and can be switched off."""

import json
from collections import Counter, defaultdict

import orjson
import pytest

from devtools.simulator.faults import NO_FAULTS, FaultConfig
from devtools.simulator.stream import Simulation, SimulationConfig
from devtools.simulator.tree import build_fleet

START_MS = 1_782_064_800_000
RATES = FaultConfig(drop=0.03, duplicate=0.03, out_of_order=0.04, late=0.02, clock_skew=0.2,
                    offline=0.002, garbage=0.02, nan=0.02, not_implemented=0.05)


@pytest.fixture(scope="module")
def noisy_run():
    fleet = build_fleet(100, seed=21)
    sim = Simulation(fleet, SimulationConfig(START_MS, 5.0, RATES))
    return fleet, sim, sim.run(1800)


def _rate(count, total):
    return count / total


def test_per_reading_fault_rates_are_roughly_respected(noisy_run):
    fleet, sim, emissions = noisy_run
    ticks = sim.stats["ticks"]
    assert ticks == 100 * 360
    online = ticks - sim.stats["offline_silent"]
    for name, rate in (("dropped", RATES.drop), ("garbage", RATES.garbage), ("nan", RATES.nan),
                       ("late", RATES.late), ("duplicate", RATES.duplicate)):
        assert 0.7 * rate < _rate(sim.stats[name], online) < 1.3 * rate, name
    # out-of-order is drawn only when a reading is not already late
    assert 0.7 * RATES.out_of_order < _rate(sim.stats["out_of_order"], online * (1 - RATES.late)) < 1.3 * RATES.out_of_order
    sunspec = sum(1 for e in emissions if e.reading and "duplicate" not in e.faults
                  and fleet.by_id[e.device_id].dialect == "sunspec/802")
    assert 0.6 * RATES.not_implemented < sim.stats["not_implemented"] / sunspec < 1.4 * RATES.not_implemented


def test_clock_skew_is_a_per_device_offset(noisy_run):
    fleet, _, emissions = noisy_run
    offsets = defaultdict(set)
    for e in emissions:
        offsets[e.device_id].add(e.reading.reading_ns // 1_000_000 - e.tick_ms)
    skewed = [d for d, s in offsets.items() if s != {0}]
    assert all(len(offsets[d]) == 1 for d in offsets)
    assert 0.1 < len(skewed) / len(fleet) < 0.3
    assert all(1_000 <= abs(next(iter(offsets[d]))) <= 900_000 for d in skewed)


def test_faulty_bytes_look_like_a_broken_gateway(noisy_run):
    _, _, emissions = noisy_run
    by_fault = defaultdict(list)
    for e in emissions:
        for f in e.faults:
            by_fault[f].append(e.record.value)
    for value in by_fault["garbage"]:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(value)
        with pytest.raises(orjson.JSONDecodeError):  # also as the lossy text a dump carries
            orjson.loads(value.decode("utf-8", errors="replace"))
    for value in [v for v in by_fault["nan"] if v not in by_fault["garbage"]]:
        assert b"NaN" in value
        json.loads(value)  # a lenient parser reads it ...
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(value)  # ... a strict one does not
    for value in [v for v in by_fault["not_implemented"] if v not in by_fault["garbage"]]:
        models = orjson.loads(value)["payload"]["models"]
        registers = [r for m in models.values() for r in m.values()]
        assert -32768 in registers or 65535 in registers


def test_duplicates_repeat_the_same_bytes_and_delays_reorder_the_stream(noisy_run):
    _, _, emissions = noisy_run
    values = Counter(e.record.value for e in emissions)
    duplicated = [e for e in emissions if "duplicate" in e.faults and "garbage" not in e.faults]
    assert duplicated and all(values[e.record.value] == 2 for e in duplicated)
    for e in emissions:
        delay = e.record.timestamp_ms - e.tick_ms
        if "late" in e.faults:
            assert delay >= 30_000
        elif "out_of_order" in e.faults:
            assert delay >= 1_000
    ticks = [e.tick_ms for e in emissions]
    assert any(a > b for a, b in zip(ticks, ticks[1:]))


def test_offline_devices_fall_silent_for_minutes_then_come_back(noisy_run):
    _, sim, emissions = noisy_run
    assert sim.stats["offline_episodes"] > 0
    ticks_by_device = defaultdict(list)
    for e in emissions:
        ticks_by_device[e.device_id].append(e.tick_ms)
    gaps = [b - a for ts in ticks_by_device.values() for a, b in zip(sorted(ts), sorted(ts)[1:])]
    assert max(gaps) >= 60_000


def test_without_faults_every_reading_arrives_once_clean_and_in_order():
    fleet = build_fleet(50, seed=21)
    sim = Simulation(fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS))
    emissions = sim.run(600)
    assert len(emissions) == sim.stats["ticks"] == 50 * 120
    assert all(e.faults == () for e in emissions)
    assert len({e.record.value for e in emissions}) == len(emissions)
    last = {}
    for e in emissions:
        orjson.loads(e.record.value)
        assert e.reading.reading_ns // 1_000_000 == e.tick_ms
        assert last.get(e.device_id, 0) < e.tick_ms
        last[e.device_id] = e.tick_ms


def test_rates_outside_0_1_are_refused():
    with pytest.raises(ValueError, match="drop"):
        FaultConfig(drop=1.5)
