"""Aggregation rules (spec fleet.md section 1), one table row per rule; roll-up and merge invariants by hypothesis."""

from __future__ import annotations

import pickle
import random
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flows.aggregate.devices as aggregate_devices
from flows.aggregate.avro import NodeAggregateEncoder
from flows.aggregate.devices import BucketState, NodeIndex, close_through, ingest
from flows.aggregate.logic import (
    SUMMARY_FIELDS,
    ZERO,
    ShardState,
    WindowParams,
    merge,
    merge_all,
    robust_max,
    shard_add,
    shard_close_ready,
    shard_flush,
    stable_index,
    to_record,
    watermark_ms,
)
from flows.canonicalize.logic import Asset
from vpp.serde import Serde

P = WindowParams(window_ms=10_000, lateness_ms=5_000, staleness_ms=60_000, duplicate_memory_ms=60_000)
SITE_A, SITE_B = "us/ca/pge/94110/site-a", "us/ca/pge/94110/site-b"
RATED = {
    "d1": Asset("d1", "site-a", SITE_A, "UTC", capacity_wh=10_000.0, max_charge_w=5_000.0, max_discharge_w=4_000.0,
                reserve_pct=10.0),
    "d2": Asset("d2", "site-a", SITE_A, "UTC", capacity_wh=13_500.0, max_charge_w=5_000.0, max_discharge_w=5_000.0,
                reserve_pct=20.0),
}
F = {name: i for i, name in enumerate(SUMMARY_FIELDS)}


def rd(device: str, t_s: float, battery=0.0, *, solar=0.0, load=0.0, grid=0.0, soc=50.0, cap=None, path=SITE_A):
    """A reading tuple as the flow builds it; t_s in seconds from the epoch."""
    return (int(t_s * 1000), battery, solar, load, grid, soc, cap, path, device)


def run(events, params=P, rated=RATED):
    """Drive one bucket: events are readings or ("close", window). Returns {window: {leaf: summary}}, {window: nodes}."""
    state = BucketState(bucket=0)
    leaves: dict[int, dict[str, tuple]] = {}
    nodes: dict[int, dict[str, tuple]] = {}
    for e in events:
        if e[0] == "close":
            for closed in close_through(state, e[1], params, rated):
                leaves[closed.window] = {f"{site}/{dev}": s for site, dev, s in closed.leaves}
                nodes[closed.window] = closed.nodes
        else:
            ingest(state, [e], params)
    return leaves, nodes


def field(summary, name):
    return summary[F[name]]


# -- time-weighted means ------------------------------------------------------------------------------

MEAN_CASES = [
    # (why, carry, readings as (t_s, battery_w), window, expected battery mW)
    ("a value holds until the next reading", None, [(0, 1000.0), (5, 3000.0)], 0, 2_000_000),
    ("uneven spans weigh by time", None, [(0, 1000.0), (8, 3000.0)], 0, 1_400_000),
    ("a device that joins mid-window is averaged from its first reading", None, [(4, 1000.0)], 0, 1_000_000),
    ("the previous reading back-fills the start", (9, 1000.0), [(15, 3000.0)], 1, 2_000_000),
    ("a reading at the window start leaves the carry no span", (9, 1000.0), [(10, 3000.0)], 1, 3_000_000),
    ("negative (charging) powers average too", None, [(0, -1000.0), (5, -2000.0)], 0, -1_500_000),
    ("a null power is left out of the mean", None, [(0, 1000.0), (5, None)], 0, 1_000_000),
    ("a power unknown all window contributes 0", None, [(0, None)], 0, 0),
]


@pytest.mark.parametrize("why,carry,readings,window,expected", MEAN_CASES, ids=[c[0] for c in MEAN_CASES])
def test_time_weighted_mean(why, carry, readings, window, expected):
    events = [rd("d1", carry[0], carry[1]), ("close", window - 1)] if carry else []
    events += [rd("d1", t, b) for t, b in readings] + [("close", window)]
    leaves, _ = run(events)
    assert field(leaves[window][f"{SITE_A}/d1"], "battery_mw") == expected


# -- window rules, table-driven -----------------------------------------------------------------------

def test_reporting_device_counts_everything_once():
    leaves, nodes = run([rd("d1", 1, 1000.0, solar=2000.0, load=500.0, grid=-500.0, soc=50.0), ("close", 0)])
    s = leaves[0][f"{SITE_A}/d1"]
    assert (field(s, "devices_known"), field(s, "devices_reporting"), field(s, "estimated_devices")) == (1, 1, 0)
    assert (field(s, "battery_mw"), field(s, "solar_mw"), field(s, "load_mw"), field(s, "grid_mw")) == \
        (1_000_000, 2_000_000, 500_000, -500_000)
    assert set(nodes[0]) == {"us", "us/ca", "us/ca/pge", "us/ca/pge/94110", SITE_A}
    assert all(v == s for v in nodes[0].values())


ENERGY_CASES = [
    # (why, soc, capacity reported, energy_available_wh, headroom_wh, discharge_w, charge_w)
    ("above reserve: both ways", 50.0, None, 4_000.0, 5_000.0, 4_000.0, 5_000.0),
    ("at reserve: no energy, cannot discharge", 10.0, None, 0.0, 9_000.0, 0.0, 5_000.0),
    ("below reserve: floored at 0", 5.0, None, 0.0, 9_500.0, 0.0, 5_000.0),
    ("full: no headroom, cannot charge", 100.0, None, 9_000.0, 0.0, 4_000.0, 0.0),
    ("the reading's capacity wins over the registry's", 50.0, 8_000.0, 3_200.0, 4_000.0, 4_000.0, 5_000.0),
    ("unknown SoC: no energy and no available power", None, None, 0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("why,soc,cap,energy,headroom,discharge,charge", ENERGY_CASES, ids=[c[0] for c in ENERGY_CASES])
def test_energy_and_available_power(why, soc, cap, energy, headroom, discharge, charge):
    leaves, _ = run([rd("d1", 1, soc=soc, cap=cap), ("close", 0)])
    record = to_record(f"{SITE_A}/d1", 0, leaves[0][f"{SITE_A}/d1"], P.window_ms)
    assert (record["energy_available_wh"], record["headroom_wh"], record["discharge_available_w"],
            record["charge_available_w"]) == (energy, headroom, discharge, charge)
    assert record["capacity_wh"] == (cap or 10_000.0)
    assert record["soc_pct"] == (None if soc is None else pytest.approx(soc))


def test_soc_pct_is_capacity_weighted():
    _, nodes = run([rd("d1", 1, soc=20.0), rd("d2", 2, soc=80.0), ("close", 0)])
    record = to_record(SITE_A, 0, nodes[0][SITE_A], P.window_ms)
    assert record["soc_pct"] == pytest.approx((20 * 10_000 + 80 * 13_500) / 23_500)
    assert record["capacity_wh"] == 23_500.0


def test_carry_forward_until_stale_then_one_zero_record_then_nothing():
    leaves, nodes = run([rd("d1", 9, 1000.0, soc=60.0), ("close", 9)])
    leaf = f"{SITE_A}/d1"
    for w in range(1, 6):  # last reading 9 s; window w ends (w+1)*10 s; known while 9 >= end - 60
        s = leaves[w][leaf]
        assert (field(s, "devices_known"), field(s, "devices_reporting"), field(s, "estimated_devices")) == (1, 0, 1)
        assert field(s, "battery_mw") == 1_000_000 and field(s, "stored_mwh") == 6_000_000
    assert leaves[6][leaf] == ZERO and nodes[6]["us"] == ZERO  # stale: out of devices_known and every sum
    assert 7 not in leaves and 7 not in nodes


def test_staleness_boundary_is_inclusive():
    leaves, _ = run([rd("d1", 0), ("close", 6)])
    assert field(leaves[5][f"{SITE_A}/d1"], "devices_known") == 1  # silent exactly 60 s at the window end
    assert leaves[6][f"{SITE_A}/d1"] == ZERO


def test_stale_carry_does_not_back_fill():
    # 70 s of silence: the new window's mean starts at its own reading, not at the stale value
    leaves, _ = run([rd("d1", 9, 5000.0), ("close", 6), rd("d1", 79, 1000.0), ("close", 7)])
    assert field(leaves[7][f"{SITE_A}/d1"], "battery_mw") == 1_000_000


def test_device_that_moves_site_counts_under_the_new_path_from_its_next_reading():
    leaves, nodes = run([rd("d1", 1, 1000.0), ("close", 0), rd("d1", 12, 2000.0, path=SITE_B), ("close", 2)])
    assert leaves[1][f"{SITE_A}/d1"] == ZERO  # the old leaf once, zeroed
    new = leaves[1][f"{SITE_B}/d1"]
    assert field(new, "devices_reporting") == 1
    assert field(new, "battery_mw") == (2 * 1000 + 8 * 2000) * 100  # back-filled from its previous reading
    assert nodes[1][SITE_A] == ZERO and nodes[1][SITE_B] == new
    assert set(leaves[2]) == {f"{SITE_B}/d1"} and SITE_A not in nodes[2]


def test_a_device_joining_later_is_counted_from_its_window():
    leaves, nodes = run([rd("d1", 1), ("close", 0), rd("d2", 15, 500.0), ("close", 1)])
    assert set(leaves[0]) == {f"{SITE_A}/d1"}
    assert field(nodes[1][SITE_A], "devices_known") == 2
    assert field(nodes[1][SITE_A], "estimated_devices") == 1


def test_late_reading_changes_no_sum_and_is_counted_in_the_next_record():
    leaves, nodes = run([rd("d1", 1, 1000.0), ("close", 0), rd("d1", 5, 9999.0), rd("d1", 12, 1000.0), ("close", 1)])
    s = leaves[1][f"{SITE_A}/d1"]
    assert field(s, "late") == 1 and field(s, "battery_mw") == 1_000_000
    assert field(leaves[0][f"{SITE_A}/d1"], "late") == 0
    assert field(nodes[1]["us"], "late") == 1


def test_late_reading_of_a_device_never_counted_still_shows():
    leaves, nodes = run([rd("d1", 1), ("close", 0), rd("d9", 3, path=SITE_B), ("close", 1)])
    assert leaves[1][f"{SITE_B}/d9"] == ZERO[:-1] + (1,)
    assert field(nodes[1]["us"], "late") == 1 and field(nodes[1]["us"], "devices_known") == 1


@pytest.mark.parametrize("copies", [2, 3])
def test_duplicate_readings_never_change_an_aggregate(copies):
    once, _ = run([rd("d1", 1, 1000.0), rd("d1", 6, 3000.0), ("close", 0), rd("d1", 11, 0.0), ("close", 1)])
    events = [rd("d1", 1, 1000.0)] * copies + [rd("d1", 6, 3000.0), ("close", 0)]
    events += [rd("d1", 6, 3000.0)] * copies  # copies of a counted reading after its window closed: not late
    events += [rd("d1", 11, 0.0)] * copies + [("close", 1)]
    again, _ = run(events)
    assert again == once


def test_windows_without_devices_are_skipped():
    leaves, _ = run([rd("d1", 1), ("close", 100), rd("d1", 1001), ("close", 100)])
    assert sorted(leaves) == [0, 1, 2, 3, 4, 5, 6]  # the second close is a no-op: 100 already closed
    leaves, _ = run([rd("d1", 1), ("close", 99), rd("d1", 1001), ("close", 100)])
    assert sorted(leaves) == [0, 1, 2, 3, 4, 5, 6, 100]


# -- watermark ----------------------------------------------------------------------------------------------

WATERMARK_CASES = [
    # (why, partition max, kwargs, expected)
    ("nothing seen", {}, {}, None),
    ("min over partitions minus lateness", {0: 50_000, 1: 30_000}, {}, 25_000),
    ("an expected partition not seen yet holds it", {0: 50_000}, {"expected": {0, 1}}, None),
    ("an idle partition no longer holds it", {0: 50_000, 1: 30_000}, {"idle": {1}}, 45_000),
    ("an expected partition that stays silent is idle", {0: 50_000}, {"expected": {0, 1}, "idle": {1}}, 45_000),
    ("all idle: the max moves on with the wall clock", {0: 50_000, 1: 30_000}, {"idle": {0, 1}, "idle_advance_ms": 7_000},
     52_000),
]


@pytest.mark.parametrize("why,pmax,kwargs,expected", WATERMARK_CASES, ids=[c[0] for c in WATERMARK_CASES])
def test_watermark(why, pmax, kwargs, expected):
    assert watermark_ms(pmax, 5_000, **kwargs) == expected


def test_robust_max_ignores_a_clock_running_ahead():
    assert robust_max([1_000, 1_001, 1_002, 1_003, 1_004, 1_005, 1_006, 1_007, 1_008, 1_009, 301_000]) == 1_009
    assert robust_max([7]) == 7


# -- invariants ---------------------------------------------------------------------------------------------

summaries = st.tuples(*[st.integers(-10**12, 10**12)] * len(SUMMARY_FIELDS))


@given(summaries, summaries, summaries)
def test_merge_is_associative_and_commutative(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, b) == merge(b, a)
    assert merge(a, ZERO) == a


paths = st.lists(st.sampled_from(["us", "de", "ca", "tx", "x", "y"]), min_size=1, max_size=5).map("/".join)
leaves_st = st.lists(st.tuples(paths, st.sampled_from(["d1", "d2", "d3", "d4"]), summaries), max_size=40)


@given(leaves_st)
def test_roll_up_every_node_is_exactly_the_sum_of_its_children(leaves):
    index = NodeIndex()
    ids, sums = index.roll_up(index.ids([site for site, _, _ in leaves]),
                              np.array([s for _, _, s in leaves], np.int64).reshape(-1, len(SUMMARY_FIELDS)))
    nodes = {index.paths[i]: tuple(s) for i, s in zip(ids.tolist(), sums.tolist())}
    children: dict[str, list[tuple]] = {}
    for site, _, s in leaves:
        children.setdefault(site, []).append(s)
    for path, s in nodes.items():
        if "/" in path:
            children.setdefault(path.rpartition("/")[0], []).append(s)
    assert set(children) <= set(nodes)
    for path, s in nodes.items():
        assert s == merge_all(children[path]), path
    roots = [s for p, s in nodes.items() if "/" not in p]
    assert merge_all(roots) == merge_all(s for _, _, s in leaves)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(2, 6))
def test_results_do_not_depend_on_how_devices_are_bucketed(seed, n_buckets):
    """The same readings in one bucket or spread over several, parts merged by shards: identical records."""
    rng = random.Random(seed)
    devices = [f"d{i}" for i in range(12)]
    sites = [SITE_A, SITE_B, "us/tx/oncor/75001/site-c", "de/by/site-d"]
    home = {d: rng.choice(sites) for d in devices}
    events: list = []
    for w in range(8):
        for d in devices:
            if rng.random() < 0.2:
                continue  # silent this window: carried forward
            if rng.random() < 0.05:
                home[d] = rng.choice(sites)  # moves
            for _ in range(rng.randint(1, 3)):
                events.append(rd(d, w * 10 + rng.uniform(0, 9.999), rng.uniform(-5000, 5000), soc=rng.uniform(0, 100),
                                 path=home[d]))
        if w >= 1 and rng.random() < 0.5:
            events.append(rd(rng.choice(devices), (w - 1) * 10 + 1))  # late
        events.append(("close", w - 1))
    events.append(("close", 7))

    def results(buckets: int):
        states = [BucketState(bucket=b) for b in range(buckets)]
        shard = ShardState()
        leaves: dict = {}
        for e in events:
            if e[0] == "close":
                for b, state in enumerate(states):
                    closed = close_through(state, e[1], P, RATED)
                    for c in closed:
                        leaves.update({(c.window, f"{s}/{d}"): v for s, d, v in c.leaves})
                    shard_add(shard, b, e[1], {c.window: (c.node_paths, c.node_summaries, c.node_is_site) for c in closed})
            else:
                ingest(states[stable_index(e[-1], buckets)], [e], P)
        nodes = {(w, p): tuple(s) for w, paths_out, sums, _ in shard_close_ready(shard, buckets)
                 for p, s in zip(paths_out, sums.tolist())}
        assert not shard_flush(shard)
        return leaves, nodes

    assert results(1) == results(n_buckets)


def test_shard_waits_for_every_bucket():
    def part(path, value):
        return ([path], np.full((1, len(SUMMARY_FIELDS)), value, np.int64), np.zeros(1, bool))

    shard = ShardState()
    shard_add(shard, 0, 3, {3: part("us", 1)})
    assert shard_close_ready(shard, 2) == []
    shard_add(shard, 1, 2, {})
    assert shard_close_ready(shard, 2) == []
    shard_add(shard, 1, 3, {3: part("us", 2)})
    [(window, paths_out, sums, _)] = shard_close_ready(shard, 2)
    assert (window, paths_out, sums.tolist()) == (3, ["us"], [[3] * len(SUMMARY_FIELDS)])
    assert shard_flush(shard) == []


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.integers(0, 2**40), summaries.map(
    lambda s: s[:-1] + (abs(s[-1]) % 10**6,)).map(lambda s: (abs(s[0]) % 10**7, abs(s[1]) % 10**7, abs(s[2]) % 10**7, *s[3:])))
def test_encoder_is_byte_identical_to_fastavro(path, window, summary):
    serde = Serde.local()
    encoder = NodeAggregateEncoder(serde.schema_id("fleet.aggregates"), 10_000)
    assert encoder.encode(path, window, summary) == serde.encode("fleet.aggregates", to_record(path, window, summary, 10_000))


# -- the columns against the scalar reference model -----------------------------------------------------

SHORT = WindowParams(window_ms=10_000, lateness_ms=5_000, staleness_ms=30_000, duplicate_memory_ms=30_000)
RATED_MIXED = {**RATED, "d3": Asset("d3", "site-c", SITE_B, "UTC", capacity_wh=None, max_charge_w=None,
                                    max_discharge_w=3_000.0, reserve_pct=None)}


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32))
def test_columnar_close_gives_the_records_of_the_scalar_reference(seed):
    """Random streams with silences past staleness, moves, nulls, duplicates and late readings."""
    import aggregate_reference as ref

    rng = random.Random(seed)
    devices = [f"d{i}" for i in range(1, 9)]
    home = {d: rng.choice([SITE_A, SITE_B, "us/tx/oncor/75001/site-c"]) for d in devices}
    maybe = lambda value: None if rng.random() < 0.1 else value  # noqa: E731
    events: list = []
    for w in range(14):
        for d in devices:
            if rng.random() < 0.35:
                continue  # silent: carried forward, and stale after a few windows
            if rng.random() < 0.05:
                home[d] = rng.choice([SITE_A, SITE_B])
            for _ in range(rng.randint(1, 3)):
                reading = rd(d, w * 10 + rng.randint(0, 9_999) / 1000, maybe(round(rng.uniform(-5000, 5000), 1)),
                             solar=maybe(round(rng.uniform(0, 6000), 1)), soc=maybe(round(rng.uniform(0, 100), 2)),
                             cap=None if rng.random() < 0.7 else rng.choice([0.0, 9_000.0]), path=home[d])
                events.extend([reading] * rng.choice([1, 1, 1, 2]))
        if w >= 1 and rng.random() < 0.5:
            events.append(rd(rng.choice(devices), (w - 1) * 10 + rng.randint(0, 9_999) / 1000))  # late
        if w >= 1:
            events.append(("close", w - 1))
    events.append(("close", 14))

    def reference():
        state, out = ref.BucketState(bucket=0), []
        for e in events:
            if e[0] == "close":
                for c in ref.close_through(state, e[1], SHORT, RATED_MIXED):
                    out.append((c.window, sorted(c.leaves), sorted(c.nodes.items())))
            else:
                ref.ingest(state, [e], SHORT)
        return out

    def columnar():
        """Readings in batches of random size, tuples turned into columns every few rows, snapshots restored."""
        state, out, batch = BucketState(bucket=0), [], []
        for e in events + [("close", None)]:
            if e[0] != "close":
                batch.append(e)
                if rng.random() < 0.7:
                    continue
            if batch:
                ingest(state, batch, SHORT)
                batch = []
            if rng.random() < 0.2:
                state = pickle.loads(pickle.dumps(state))  # the flow resuming from a snapshot
            if e[0] == "close" and e[1] is not None:
                for c in close_through(state, e[1], SHORT, RATED_MIXED):
                    out.append((c.window, sorted(c.leaves), sorted(c.nodes.items())))
        return out

    with patch.object(aggregate_devices, "CHUNK_ROWS", rng.choice([1, 2, 5, 256])), \
            patch.object(aggregate_devices, "MERGE_CHUNKS", rng.choice([1, 3, 16])):
        assert columnar() == reference()


def test_a_snapshot_holding_reading_tuples_resumes_into_columns():
    """Snapshots written before open windows were kept in columns hold a list of reading tuples per window."""
    readings = [rd("d1", 1, 100.0), rd("d2", 4, -50.0, path=SITE_B), rd("d1", 6, 300.0)]
    fresh = BucketState(bucket=0)
    ingest(fresh, readings, P)
    old = BucketState(bucket=0)
    old.open = {0: list(readings)}  # the old layout, as pickled by the version before
    resumed = pickle.loads(pickle.dumps(old))
    [a], [b] = close_through(fresh, 0, P, RATED), close_through(resumed, 0, P, RATED)
    assert sorted(a.leaves) == sorted(b.leaves) and a.nodes == b.nodes


def _batch_matches_single_records(nodes, window):
    encoder = NodeAggregateEncoder(7, 10_000)
    summaries_array = np.array([s for _, s in nodes], np.int64).reshape(-1, len(SUMMARY_FIELDS))
    assert encoder.encode_many(window, [p for p, _ in nodes], summaries_array) == \
        [encoder.encode(p, window, s) for p, s in nodes]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(paths, summaries.map(lambda s: (abs(s[0]) % 10**7, abs(s[1]) % 10**7, abs(s[2]) % 10**7,
                                                            *(v % 2**50 for v in s[3:-1]), abs(s[-1]) % 10**6))),
                max_size=30), st.integers(0, 2**40))
def test_batch_encoder_is_byte_identical_to_the_single_record_encoder(nodes, window):
    _batch_matches_single_records(nodes, window)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(paths, st.tuples(*[st.integers(0, 70)] * 3, *[st.integers(-10**9, 10**12)] * 11,
                                           st.integers(0, 70))), max_size=30), st.integers(0, 2**40))
def test_batch_encoder_with_device_sized_counts_is_byte_identical_too(nodes, window):
    """Counts and late below 64 take the block path; one at 64 or more sends the batch the general way."""
    _batch_matches_single_records(nodes, window)


def test_registry_limits_are_read_again_when_the_registry_generation_changes():
    import dataclasses

    rated = dict(RATED)
    state = BucketState(bucket=0)
    ingest(state, [rd("d1", 1, soc=50.0), rd("d1", 11, soc=50.0), rd("d1", 21, soc=50.0)], P)
    [first] = close_through(state, 0, P, rated, rated_generation=1)
    rated["d1"] = dataclasses.replace(rated["d1"], max_discharge_w=1_000.0)
    [same_generation] = close_through(state, 1, P, rated, rated_generation=1)
    ingest(state, [rd("d2", 25, soc=50.0)], P)  # a new device is read even within a generation
    [next_generation] = close_through(state, 2, P, rated, rated_generation=2)
    discharge = [c.leaves[0][2][F["discharge_available_mw"]] for c in (first, same_generation, next_generation)]
    assert discharge == [4_000_000, 4_000_000, 1_000_000]
    assert field(next_generation.nodes[SITE_A], "discharge_available_mw") == 1_000_000 + 5_000_000


def test_a_snapshot_of_another_layout_stops_the_flow_with_a_reason():
    import pickle

    from flows.aggregate.flow import DeviceBuckets, NodeShards

    with pytest.raises(RuntimeError, match="older layout"):
        NodeShards(pickle.dumps({"not": "a shard state"}))
    with pytest.raises(RuntimeError, match="older layout"):
        DeviceBuckets(b"\x80\x05garbage", params=P, registry=None, metrics=None, expected_partitions=None,
                      idle_advance=False)
    assert NodeShards(pickle.dumps(ShardState())).state == ShardState()


def test_a_shard_tells_the_sites_from_the_regions_above_them():
    """The flow writes the regions (root first in line) before the sites and the device leaves."""
    from flows.aggregate.flow import regions_only, sites_only

    shard, states = ShardState(), [BucketState(bucket=0), BucketState(bucket=1)]
    ingest(states[0], [rd("d1", 1, 100.0), rd("d2", 2, 50.0, path=SITE_B)], P)
    ingest(states[1], [rd("d3", 3, 25.0)], P)
    for b, state in enumerate(states):
        shard_add(shard, b, 0, {c.window: (c.node_paths, c.node_summaries, c.node_is_site)
                                for c in close_through(state, 0, P, RATED)})
    ready = shard_close_ready(shard, 2)
    [(_, (_, region_paths, region_sums))] = regions_only([("nodes-00", w) for w in ready])
    [(_, (_, site_paths, site_sums))] = sites_only([("nodes-00", w) for w in ready])
    assert sorted(site_paths) == sorted([SITE_A, SITE_B])
    assert "us" in region_paths and not set(region_paths) & {SITE_A, SITE_B}
    assert len(region_paths) + len(site_paths) == len(ready[0].paths)
    root = region_sums[region_paths.index("us")]
    assert root[F["devices_reporting"]] == 3 == site_sums[:, F["devices_reporting"]].sum()


def test_a_decommissioned_device_leaves_the_tree_in_the_next_window_not_after_the_staleness_horizon():
    state = BucketState(bucket=0)
    ingest(state, [rd("d1", 1, 1000.0), rd("d2", 2, 500.0)], P)
    first = close_through(state, 0, P, RATED)[0]
    assert first.nodes["us"][F["devices_known"]] == 2
    # d1 is decommissioned after window 0: the next window counts only d2 (and d1's leaf once, zeroed)
    ingest(state, [rd("d2", 12, 500.0)], P)
    (after,) = close_through(state, 1, P, {"d2": RATED["d2"]}, removed={"d1"})
    leaves = {f"{site}/{dev}": s for site, dev, s in after.leaves}
    assert leaves[f"{SITE_A}/d1"] == ZERO
    assert after.nodes["us"][F["devices_known"]] == 1 and after.nodes["us"][F["battery_mw"]] == 500_000
    assert close_through(state, 2, P, {"d2": RATED["d2"]}, removed={"d1"})[0].nodes["us"][F["devices_known"]] == 1
