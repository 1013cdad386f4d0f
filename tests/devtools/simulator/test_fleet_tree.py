"""The synthetic fleet: a region tree of sites and devices, deterministic under a seed."""

from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from vpp.assets import CSV_COLUMNS, DEVICE_ID_PATTERN, assets_to_csv, parse_assets_csv
from devtools.simulator.tree import DIALECTS, build_fleet


def test_the_same_seed_builds_the_same_fleet_and_another_seed_another():
    assert build_fleet(300, seed=7) == build_fleet(300, seed=7)
    assert build_fleet(300, seed=7).assets() != build_fleet(300, seed=8).assets()


def test_default_fleet_has_1000_devices_under_country_state_utility_zip_site():
    fleet = build_fleet()
    assert len(fleet) == 1000
    for a in fleet.assets():
        segments = a.region_path.split("/")
        assert len(segments) == 5
        assert segments[0] == "us"
        assert segments[-1] == a.site_id
        assert segments[3].isdigit() and len(segments[3]) == 5
        assert a.node_path == f"{a.region_path}/{a.device_id}"


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 7])
def test_depth_counts_path_segments_including_the_site(depth):
    fleet = build_fleet(50, depth=depth, fanout=3, seed=1)
    assert {len(a.region_path.split("/")) for a in fleet.assets()} == {depth}


def test_fanout_bounds_the_children_of_every_region_node():
    fleet = build_fleet(2000, depth=5, fanout=3, seed=2)
    children: dict[str, set[str]] = {}
    for a in fleet.assets():
        segments = a.region_path.split("/")
        for level in range(1, len(segments) - 1):
            children.setdefault("/".join(segments[:level]), set()).add(segments[level])
    assert max(len(c) for c in children.values()) == 3


def test_devices_are_valid_registry_entries_with_realistic_hardware():
    fleet = build_fleet(1000, seed=0)
    ids = [a.device_id for a in fleet.assets()]
    assert len(set(ids)) == len(ids)
    for d in fleet.devices:
        a = d.asset
        assert DEVICE_ID_PATTERN.fullmatch(a.device_id)
        ZoneInfo(a.timezone)
        assert 5_000 <= a.capacity_wh <= 16_000
        assert 2_500 <= a.max_charge_w <= 11_500 and 2_500 <= a.max_discharge_w <= 11_500
        assert 10 <= a.reserve_pct <= 20
        assert 3_000 <= d.solar_peak_w <= 8_000
        assert d.dialect in DIALECTS


def test_a_mixed_fleet_across_time_zones_most_sites_with_one_device():
    fleet = build_fleet(1000, fanout=6, seed=0)
    assert set(Counter(d.dialect for d in fleet.devices)) == set(DIALECTS)
    assert len({a.timezone for a in fleet.assets()}) >= 3
    per_site = Counter(a.region_path for a in fleet.assets())
    assert set(per_site.values()) == {1, 2}
    assert 0.03 < sum(1 for n in per_site.values() if n == 2) / len(per_site) < 0.2
    enrolled = sum(a.enrolled_peak_shaving for a in fleet.assets()) / len(fleet)
    assert 0.6 < enrolled < 0.95


def test_the_fleet_writes_the_registry_csv_and_reads_it_back():
    fleet = build_fleet(100, seed=4)
    text = assets_to_csv(fleet.assets())
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS) + ",enrolled_peak_shaving"
    assert parse_assets_csv(text) == fleet.assets()


def test_an_impossible_tree_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="depth"):
        build_fleet(10, depth=1)
    with pytest.raises(ValueError, match="fanout"):
        build_fleet(10, depth=12, fanout=20)
