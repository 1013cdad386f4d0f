"""The generator: deterministic records, kcat dumps, and set points obeyed."""

import json

import orjson
import pytest

from devtools.simulator.dump import dump_lines, murmur2, partition_for, simulate_to_dump
from devtools.simulator.faults import NO_FAULTS, FaultConfig
from devtools.simulator.kafka_io import read_conditions_file, read_offline_file
from devtools.simulator.physics import LoadSurge
from devtools.simulator.stream import SetPoint, Simulation, SimulationConfig
from devtools.simulator.tree import build_fleet
from vpp.errors import UserError

START_MS = 1_782_064_800_000  # 2026-06-21T18:00:00Z, late morning in the US
NOISY = FaultConfig(drop=0.05, duplicate=0.05, out_of_order=0.05, late=0.02, clock_skew=0.1,
                    offline=0.01, garbage=0.02, nan=0.02, not_implemented=0.05)


def _dump_bytes(tmp_path, name, seed, faults=NOISY):
    fleet = build_fleet(40, seed=seed)
    path = tmp_path / f"{name}.jsonl"
    simulate_to_dump(path, fleet, SimulationConfig(START_MS, 2.0, faults), 120, partitions=4)
    return path.read_bytes(), (tmp_path / f"{name}.assets.csv").read_bytes()


def test_the_same_seed_gives_byte_identical_dumps_and_assets(tmp_path):
    assert _dump_bytes(tmp_path, "a", seed=11) == _dump_bytes(tmp_path, "b", seed=11)
    assert _dump_bytes(tmp_path, "c", seed=11)[0] != _dump_bytes(tmp_path, "d", seed=12)[0]


def test_the_output_does_not_depend_on_how_time_is_sliced():
    fleet = build_fleet(30, seed=5)
    config = SimulationConfig(START_MS, 1.0, NOISY)
    coarse = Simulation(fleet, config)
    fine = Simulation(fleet, config)
    in_one_go = coarse.step(START_MS + 600_000)
    in_steps = [r for t in range(START_MS, START_MS + 600_001, 137) for r in fine.step(t)]
    assert in_one_go == in_steps


def test_records_are_keyed_by_device_and_stamped_with_the_send_time_in_order():
    sim = Simulation(build_fleet(20, seed=1), SimulationConfig(START_MS, 5.0, NO_FAULTS))
    emissions = sim.run(60)
    assert len(emissions) == 20 * 12  # one reading per device every 5 s
    assert [e.record.timestamp_ms for e in emissions] == sorted(e.record.timestamp_ms for e in emissions)
    for e in emissions:
        envelope = orjson.loads(e.record.value)
        assert e.record.key == envelope["device_id"].encode() == e.device_id.encode()
        assert START_MS <= e.tick_ms < START_MS + 60_000
        assert e.tick_ms < e.record.timestamp_ms <= e.tick_ms + 450


def test_kafka_murmur2_matches_the_java_client():
    # vectors from Kafka's UtilsTest.testMurmur2
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {k: murmur2(k) for k in cases} == cases


def test_a_dump_is_kcat_json_with_per_partition_offsets(tmp_path):
    fleet = build_fleet(25, seed=2)
    path = tmp_path / "raw.jsonl"
    lines, assets_path, sim = simulate_to_dump(path, fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS), 30, partitions=3)
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(rows) == lines == sim.stats["sent"]
    assert assets_path == tmp_path / "raw.assets.csv"
    next_offset = {0: 0, 1: 0, 2: 0}
    for row in rows:
        assert list(row) == ["topic", "partition", "offset", "tstype", "ts", "broker", "key", "payload"]
        assert (row["topic"], row["tstype"], row["broker"]) == ("telemetry.raw", "create", 0)
        assert row["partition"] == partition_for(row["key"].encode(), 3)
        assert row["offset"] == next_offset[row["partition"]]
        next_offset[row["partition"]] += 1
        assert orjson.loads(row["payload"])["device_id"] == row["key"]


def test_invalid_utf8_is_dumped_lossily_and_stays_invalid_json():
    from devtools.simulator.stream import Record

    bad = Record(b"pw-000001", b'{"device_id":"pw-0\xc3\x28\xa0\xa1', 1)
    row = orjson.loads(next(iter(dump_lines([bad], partitions=4))))
    assert "\ufffd" in row["payload"]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(row["payload"])


def _battery_w_while(sim, device_id, until_ms):
    return [(e.tick_ms, e.reading.battery_w, e.reading.soc_pct) for e in sim.advance(until_ms) if e.device_id == device_id]


def test_a_set_point_is_followed_until_its_end_then_self_consumption_resumes():
    fleet = build_fleet(10, seed=3)
    device = fleet.devices[0]
    sim = Simulation(fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS))
    sim.apply_setpoint(SetPoint(device.device_id, 1500.0, START_MS + 60_000, START_MS + 120_000, "cmd-1"))
    readings = _battery_w_while(sim, device.device_id, START_MS + 300_000)
    during = [w for t, w, _ in readings if START_MS + 60_000 <= t < START_MS + 120_000]
    outside = [w for t, w, _ in readings if not START_MS + 60_000 <= t < START_MS + 120_000]
    assert during and all(w == 1500.0 for w in during)
    assert outside and all(w != 1500.0 for w in outside)
    for (t0, w0, soc0), (t1, _, soc1) in zip(readings, readings[1:]):  # energy books close between readings
        assert soc1 == pytest.approx(soc0 - w0 * (t1 - t0) / 1000 / 3600 / device.asset.capacity_wh * 100, abs=1e-9)


def test_a_release_or_a_newer_set_point_supersedes_the_older_one():
    fleet = build_fleet(10, seed=3)
    device_id = fleet.devices[0].device_id
    sim = Simulation(fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS))
    sim.apply_setpoint(SetPoint(device_id, -2000.0, START_MS, START_MS + 600_000, "charge"))
    sim.apply_setpoint(SetPoint(device_id, 800.0, START_MS + 100_000, START_MS + 200_000, "discharge"))
    sim.apply_setpoint(SetPoint(device_id, 0.0, START_MS + 150_000, START_MS + 600_000, "release"))
    assert sim.active_setpoint_w(device_id, START_MS + 50_000) == -2000.0
    assert sim.active_setpoint_w(device_id, START_MS + 120_000) == 800.0
    assert sim.active_setpoint_w(device_id, START_MS + 160_000) is None
    assert sim.active_setpoint_w(device_id, START_MS + 300_000) is None  # the charge never resumes
    assert not sim.apply_setpoint(SetPoint("no-such-device", 1.0, START_MS, START_MS + 1, "x"))


def test_set_points_change_physics_but_not_faults_or_timing():
    fleet = build_fleet(15, seed=9)
    plain = Simulation(fleet, SimulationConfig(START_MS, 5.0, NOISY))
    commanded = Simulation(fleet, SimulationConfig(START_MS, 5.0, NOISY))
    for d in fleet.devices:
        commanded.apply_setpoint(SetPoint(d.device_id, 3000.0, START_MS, START_MS + 3_600_000))
    a, b = plain.run(300), commanded.run(300)
    assert [(e.device_id, e.tick_ms, e.record.timestamp_ms, e.faults) for e in a] == \
        [(e.device_id, e.tick_ms, e.record.timestamp_ms, e.faults) for e in b]


EVENING_MS = 1_797_303_600_000  # 2026-12-15T03:00:00Z: 19:00 in California, dark, the evening peak


def _by_device(emissions):
    out = {}
    for e in emissions:
        out.setdefault(e.device_id, []).append(e.reading)
    return out


def test_enrolled_devices_hold_their_energy_for_the_program_and_the_others_cover_their_homes():
    fleet = build_fleet(30, depth=3, fanout=1, seed=4)
    enrolled = {d.device_id for d in fleet.devices if d.asset.enrolled_peak_shaving}
    assert 0 < len(enrolled) < len(fleet)
    plain = _by_device(Simulation(fleet, SimulationConfig(EVENING_MS, 5.0, NO_FAULTS)).run(600))
    held = _by_device(Simulation(fleet, SimulationConfig(EVENING_MS, 5.0, NO_FAULTS, program_reserve_pct=100.0)).run(600))
    for d in fleet.devices:
        if d.device_id in enrolled:  # no solar at night: a held battery is idle and the home imports its load
            assert all(r.battery_w == 0.0 and r.grid_w == r.load_w for r in held[d.device_id])
            assert any(r.battery_w > 0 for r in plain[d.device_id])
        else:
            assert held[d.device_id] == plain[d.device_id]


def test_a_program_reserve_is_a_percentage():
    with pytest.raises(ValueError, match="between 0 and 100"):
        SimulationConfig(START_MS, program_reserve_pct=120.0)


def test_a_load_surge_adds_the_same_load_to_every_home_and_nothing_else_changes():
    fleet = build_fleet(12, seed=2)
    surge = LoadSurge(EVENING_MS + 60_000, 2000.0, ramp_s=60, hold_s=120)
    config = SimulationConfig(EVENING_MS, 5.0, NOISY)
    plain = Simulation(fleet, config).run(400)
    surged = Simulation(fleet, SimulationConfig(EVENING_MS, 5.0, NOISY, load_surge=surge)).run(400)
    assert [(e.device_id, e.tick_ms, e.faults) for e in plain] == [(e.device_id, e.tick_ms, e.faults) for e in surged]
    extras = [b.reading.load_w - a.reading.load_w for a, b in zip(plain, surged)]
    assert extras == pytest.approx([surge.extra_at(e.tick_ms) for e in plain], abs=1e-6)
    assert max(extras) == pytest.approx(2000.0)


def test_devices_taken_offline_fall_silent_miss_set_points_and_come_back():
    fleet = build_fleet(20, seed=8)
    gone = fleet.devices[0]
    site = fleet.devices[5].asset.region_path  # a region path takes every device under it
    under_site = {d.device_id for d in fleet.devices if d.asset.region_path == site}
    sim = Simulation(fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS))
    twin = Simulation(fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS))
    before = sim.advance(START_MS + 60_000)
    assert before == twin.advance(START_MS + 60_000)
    assert sim.set_offline([gone.device_id, site + "/", "  ", "no-such-device"]) == {gone.device_id} | under_site
    assert not sim.apply_setpoint(SetPoint(gone.device_id, 1000.0, START_MS + 60_000, START_MS + 600_000))
    during = sim.advance(START_MS + 120_000)
    twin_during = twin.advance(START_MS + 120_000)
    silent = {gone.device_id} | under_site
    assert not {e.device_id for e in during} & silent
    assert [e for e in during] == [e for e in twin_during if e.device_id not in silent]
    assert sim.set_offline([]) == set()
    after = sim.advance(START_MS + 180_000)
    assert {e.device_id for e in after} == {d.device_id for d in fleet.devices}
    assert sim.active_setpoint_w(gone.device_id, START_MS + 170_000) is None  # the missed set point stays missed


def test_the_offline_file_names_devices_and_paths_one_per_line(tmp_path):
    path = tmp_path / "offline.txt"
    assert read_offline_file(path) == []  # no file: nobody offline
    path.write_text("# taken down for the test\npw-000001\n\nus/ca/pge  # a whole utility\n")
    assert read_offline_file(path) == ["pw-000001", "us/ca/pge"]


def test_conditions_on_demand_island_a_region_and_make_a_dialect_send_garbage():
    fleet = build_fleet(40, seed=9)
    site = fleet.devices[3].asset.region_path
    under_site = {d.device_id for d in fleet.devices if d.asset.region_path == site}
    dialect = fleet.devices[0].dialect
    of_dialect = {d.device_id for d in fleet.devices if d.dialect == dialect}
    sim = Simulation(fleet, SimulationConfig(START_MS, 5.0, NO_FAULTS))
    sim.advance(START_MS + 30_000)
    assert sim.set_conditions([site], [dialect]) == (under_site, of_dialect)
    during = sim.advance(START_MS + 90_000)
    assert {e.device_id for e in during if not e.reading.grid_connected} == under_site
    garbage = {e.device_id for e in during if "garbage_forced" in e.faults}
    assert garbage == of_dialect
    for e in during:
        if e.device_id in garbage:
            with pytest.raises(ValueError):
                json.loads(e.record.value)
    assert sim.set_conditions([], []) == (set(), set())
    after = sim.advance(START_MS + 150_000)
    back = [e for e in after if e.tick_ms >= START_MS + 95_000]  # ticks after the change (earlier ones may still be in flight)
    assert back and all(e.reading.grid_connected and "garbage_forced" not in e.faults for e in back)


def test_the_conditions_file_names_islanded_devices_or_paths_and_garbage_dialects(tmp_path):
    path = tmp_path / "conditions.txt"
    assert read_conditions_file(path) == ([], [])
    path.write_text("islanded us/ca  # the whole state\ngarbage sonnen/2\n\nislanded dev-1\n")
    assert read_conditions_file(path) == (["us/ca", "dev-1"], ["sonnen/2"])
    path.write_text("flood us/ca\n")
    with pytest.raises(UserError, match="flood us/ca"):
        read_conditions_file(path)
