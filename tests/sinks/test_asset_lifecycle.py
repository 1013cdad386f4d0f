"""The life of a device in the registry (issue #22), on the real PostgreSQL and broker: lifecycle rules, versions,
replacement, decommissioning out of the tree and the dispatch pools within one window, and program enrollment
driving a peak-shaving command."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from real_services import wait_for

from flows.aggregate.devices import BucketState, close_through, ingest
from flows.aggregate.logic import SUMMARY_FIELDS, WindowParams
from flows.dispatch.flow import Removals, device_reading
from flows.dispatch.state import DispatchState, Emitted
from sinks.asset_cache import AssetCache
from sinks.asset_history import history
from sinks.asset_operations import apply_operation
from sinks.asset_registry import upsert_assets
from vpp.asset_lifecycle import STATUSES, TRANSITIONS, check_transition
from vpp.assets import asset_from_row, parse_assets_csv
from vpp.errors import UserError

HEADER = "device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct"
SITE = "us/ca/pge/94110/site-1"
RATINGS = {"site_id": "site-1", "region_path": SITE, "timezone": "UTC", "capacity_wh": 10_000, "max_charge_w": 5_000,
           "max_discharge_w": 5_000, "reserve_pct": 10}


@pytest.mark.parametrize("old", STATUSES)
@pytest.mark.parametrize("new", STATUSES)
def test_only_the_lifecycles_steps_are_allowed_and_a_refusal_names_the_next_ones(old, new):
    if new == old or new in TRANSITIONS[old]:
        check_transition("d", old, new)
    else:
        with pytest.raises(UserError, match=f"is {old}: it cannot become {new} \\(from {old} it can become"):
            check_transition("d", old, new)


def test_a_devices_life_is_kept_version_by_version_and_a_replacement_links_the_sites_history(isolated_settings):
    from sinks.certificates import insert_certificates, list_certificates

    s = isolated_settings
    apply_operation(s, "add", "b-1", RATINGS, changed_by="installer", reason="installed")
    with pytest.raises(UserError, match="is registered: it cannot become active"):
        apply_operation(s, "activate", "b-1", {}, changed_by="op")
    for op in ("commission", "activate", "suspend", "activate"):
        apply_operation(s, op, "b-1", {}, changed_by="op")
    with pytest.raises(UserError, match="needs a reason"):
        apply_operation(s, "decommission", "b-1", {}, changed_by="op")
    now = datetime.now(timezone.utc)
    with psycopg.connect(s.postgres_dsn) as conn:
        insert_certificates(conn, [("ab01", "b-1", "f" * 64, now, now + timedelta(days=365))])
    gone = apply_operation(s, "decommission", "b-1", {}, changed_by="op", reason="battery failed")
    assert [e["kind"] for e in gone.events] == ["device_removed"] and gone.revoked == ["ab01"]
    with psycopg.connect(s.postgres_dsn) as conn:
        assert [c.status for c in list_certificates(conn, "b-1")] == ["revoked"]
    for op in ("activate", "move"):
        with pytest.raises(UserError, match="decommissioned"):
            apply_operation(s, op, "b-1", {"region_path": "us/ca/x/site-2"}, changed_by="op")
    with pytest.raises(UserError, match="decommissioned: its id is not reused"):  # an import too: all or nothing
        upsert_assets(s.postgres_dsn, parse_assets_csv(f"{HEADER}\nb-9,site-9,us/x/site-9,UTC,1,1,1,1\n"
                                                       f"b-1,site-1,{SITE},UTC,10000,5000,5000,10\n"))
    with pytest.raises(UserError, match="at site 'site-1', not 'site-2'"):
        apply_operation(s, "add", "b-2", {**RATINGS, "site_id": "site-2", "region_path": "us/ca/site-2",
                                          "replaces": "b-1"}, changed_by="installer")
    apply_operation(s, "add", "b-2", {**RATINGS, "replaces": "b-1", "status": "active"}, changed_by="installer")

    versions = history(s.postgres_dsn, "b-2")
    assert [(v["device_id"], v["status"]) for v in versions] == [
        ("b-1", "registered"), ("b-1", "commissioned"), ("b-1", "active"), ("b-1", "suspended"), ("b-1", "active"),
        ("b-1", "decommissioned"), ("b-2", "active")]
    assert history(s.postgres_dsn, "b-1") == versions  # linked both ways
    old = [v for v in versions if v["device_id"] == "b-1"]
    assert all(a["valid_to"] == b["valid_from"] for a, b in zip(old, old[1:])) and old[-1]["valid_to"] is None
    assert (old[0]["changed_by"], old[0]["reason"], old[-1]["reason"]) == ("installer", "installed", "battery failed")
    with pytest.raises(UserError, match="cannot be dated before"):
        apply_operation(s, "suspend", "b-2", {}, changed_by="op", at_ms=int(old[0]["valid_from"].timestamp() * 1000))
    with psycopg.connect(s.postgres_dsn) as conn:
        audited = conn.execute("SELECT actor, action, target FROM audit_log WHERE target = 'b-1' ORDER BY id").fetchall()
    assert audited[0] == ("installer", "assets add", "b-1") and audited[-1] == ("op", "assets decommission", "b-1")


P = WindowParams(window_ms=10_000, lateness_ms=5_000, staleness_ms=60_000, duplicate_memory_ms=60_000)
F = {name: i for i, name in enumerate(SUMMARY_FIELDS)}


def _canonical(device: str, ts_ms: int, soc: float = 60.0) -> dict:
    return {"device_id": device, "region_path": SITE, "ts": ts_ms, "soc_pct": soc, "capacity_wh": None}


def _aggregate_reading(device: str, ts_ms: int) -> tuple:
    return (ts_ms, 1000.0, 0.0, 0.0, 0.0, 60.0, None, SITE, device)


def test_a_decommissioned_device_leaves_the_tree_and_every_pool_within_one_window(isolated_settings):
    from sinks.kafka_tools import iter_topic
    from vpp.serde import Serde

    s = isolated_settings
    upsert_assets(s.postgres_dsn, parse_assets_csv(HEADER + "\n" + "".join(
        f"p-{i},site-1,{SITE},UTC,10000,5000,5000,10\n" for i in range(3))))
    cache = AssetCache(s.postgres_dsn, asset_from_row, refresh_s=3600)  # only the NOTIFY can make it refresh now
    cache.wait_for_first_load()
    t0 = (int(time.time() * 1000) // 10_000) * 10_000
    state, first = DispatchState(), Emitted()
    state.on_readings([device_reading(_canonical(f"p-{i}", t0 + i), cache.assets[f"p-{i}"]) for i in range(3)], first)
    state.on_command({"command_id": "c", "node_path": "us/ca", "target_w": 3000.0, "start": t0, "end": t0 + 3_600_000,
                      "issued_by": "t"}, True, first)
    bucket = BucketState(bucket=0)
    ingest(bucket, [_aggregate_reading(f"p-{i}", t0 + i) for i in range(3)], P)
    assert close_through(bucket, t0 // 10_000, P, cache.assets)[0].nodes["us"][F["devices_known"]] == 3

    apply_operation(s, "decommission", "p-1", {}, changed_by="op", reason="removed from the house")
    wait_for(lambda: cache.refresh_if_due() and "p-1" in cache.removed, 10, "the cache to drop p-1 on the NOTIFY")
    assert "p-1" not in cache.assets

    out, removals = Emitted(), Removals()
    for device_id, asset in removals.new(cache):
        assert asset.region_path == SITE
        state.on_removed([device_id], out)
    setpoints = {sp["device_id"]: sp["setpoint_w"] for sp in out.setpoints}
    assert setpoints["p-1"] == 0.0 and sum(setpoints.values()) == pytest.approx(3000.0, abs=1.0)  # moved to the others
    assert removals.new(cache) == []  # told once
    (nxt,) = close_through(bucket, t0 // 10_000 + 1, P, cache.assets, cache.generation, cache.removed)
    assert nxt.nodes["us"][F["devices_known"]] == 2  # the very next window, not after 60 s of staleness

    serde = Serde.from_settings(s)
    events = [serde.decode(m.value()) for m in iter_topic(s, s.topic("fleet.events"), timeout_s=10)]
    (removed,) = [e for e in events if e["kind"] == "device_removed"]
    assert (removed["subject"], removed["node_path"]) == ("p-1", f"{SITE}/p-1")
    assert removed["detail"]["reason"] == "removed from the house" and removed["detail"]["changed_by"] == "op"


def test_program_enrollment_decides_who_takes_part_in_peak_shaving_and_the_reserve_it_holds(isolated_settings, capsys,
                                                                                            monkeypatch):
    from real_services import vpp_env

    from cli.main import main

    s = isolated_settings
    for name, value in vpp_env(s).items():  # the CLI on the test's own database and topics
        monkeypatch.setenv(name, value)
    upsert_assets(s.postgres_dsn, parse_assets_csv(HEADER + ",enrolled_peak_shaving\n" + "".join(
        f"e-{i},site-1,{SITE},UTC,10000,5000,5000,10,false\n" for i in range(3))), changed_by="import")  # market only
    args = ["--by", "ops"]
    assert main(["assets", "enroll", "e-2", "peak_shaving", "--reserve-pct", "40", *args]) == 0
    cache = AssetCache(s.postgres_dsn, asset_from_row)
    cache.wait_for_first_load()
    t0 = int(time.time() * 1000)
    state, out = DispatchState(), Emitted()
    state.on_readings([device_reading(_canonical(f"e-{i}", t0 + i), cache.assets[f"e-{i}"]) for i in range(3)], out)
    state.on_command({"command_id": "ps", "node_path": "us", "target_w": 9000.0, "start": t0, "end": t0 + 3_600_000,
                      "issued_by": "peak-shaving", "program": "peak_shaving"}, True, out)
    setpoints = {sp["device_id"]: sp["setpoint_w"] for sp in out.setpoints}
    # only e-2 takes part; at 60 % it keeps the program's 40 %: 2 kWh over the hour
    assert list(setpoints) == ["e-2"] and setpoints["e-2"] == pytest.approx(2000.0, abs=1.0)

    assert main(["assets", "unenroll", "e-2", "peak_shaving", *args]) == 0
    wait_for(lambda: cache.refresh_if_due() and not cache.assets["e-2"].enrolled_in("peak_shaving", int(time.time() * 1000)),
             10, "the cache to see the unenrollment")
    later, after = int(time.time() * 1000) + 10, Emitted()
    state.on_readings([device_reading(_canonical(f"e-{i}", later + i), cache.assets[f"e-{i}"]) for i in range(3)], after)
    state.advance(later + 10_000, after)  # the next window check
    assert {sp["device_id"]: sp["setpoint_w"] for sp in after.setpoints} == {"e-2": 0.0}
    capsys.readouterr()
    assert main(["assets", "history", "e-2", "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert [(v["changed_by"], [p["program"] for p in v["programs"]]) for v in versions] == [
        ("import", ["market"]), ("ops", ["market", "peak_shaving"]), ("ops", ["market", "peak_shaving"])]
    assert "to_ms" in versions[-1]["programs"][1]  # the enrollment ended, kept with its dates
