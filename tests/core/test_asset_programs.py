"""Programs, enrollments and the registry through time (issue #22), pure: the CSV stays backward compatible, an
enrollment has effective dates and a reserve, and a timeline answers with the version valid at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from vpp.asset_lifecycle import Enrollment, change_events, effective, enroll, parse_programs_cell, unenroll
from vpp.asset_versions_csv import AssetTimeline, read_versions_csv, versions_to_csv
from vpp.assets import Asset, assets_to_csv, parse_assets_csv
from vpp.errors import UserError

HEADER = "device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct"
ROW = "pw-1,site-1,us/ca/site-1,UTC,13500,5000,5000,10"


@pytest.mark.parametrize("extra_header, extra_cells, programs", [
    ("", "", {"market": 0.0, "peak_shaving": 0.0}),  # no column: market and peak shaving, as before
    (",enrolled_peak_shaving", ",false", {"market": 0.0}),  # the old flag maps to the peak-shaving enrollment
    (",enrolled_peak_shaving", ",", {"market": 0.0, "peak_shaving": 0.0}),
    (",programs", ",peak_shaving:25", {"peak_shaving": 25.0}),
    (",enrolled_peak_shaving,programs", ",true,market;peak_shaving:20", {"market": 0.0, "peak_shaving": 20.0}),
])
def test_the_csv_maps_the_old_flag_and_the_programs_column_to_enrollments(extra_header, extra_cells, programs):
    (asset,) = parse_assets_csv(f"{HEADER}{extra_header}\n{ROW}{extra_cells}\n")
    assert effective(asset.enrollments, 0) == programs
    assert parse_assets_csv(assets_to_csv([asset])) == [asset]  # written back, read back the same


@pytest.mark.parametrize("cells, message", [
    (",false,peak_shaving", "contradicts programs"),
    (",,Peak-Shaving", "must be a lowercase name"),
    (",,market:120", "between 0 and 100"),
    (",,market;market", "appears twice"),
])
def test_bad_programs_are_refused_with_the_line(cells, message):
    with pytest.raises(UserError, match=f"line 2: .*{message}"):
        parse_assets_csv(f"{HEADER},enrolled_peak_shaving,programs\n{ROW}{cells}\n")


def test_an_enrollment_has_effective_dates_and_a_new_one_ends_the_open_one():
    e = enroll((Enrollment("market"), Enrollment("peak_shaving")), "peak_shaving", reserve_pct=30, from_ms=100,
               to_ms=500)
    assert effective(e, 99) == {"market": 0.0, "peak_shaving": 0.0}
    assert effective(e, 100) == effective(e, 499) == {"market": 0.0, "peak_shaving": 30.0}
    assert effective(e, 500) == {"market": 0.0}
    ended = unenroll("d", e, "peak_shaving", at_ms=200)
    assert effective(ended, 150) == {"market": 0.0, "peak_shaving": 30.0} and effective(ended, 200) == {"market": 0.0}
    with pytest.raises(UserError, match="not enrolled in 'peak_shaving'"):
        unenroll("d", ended, "peak_shaving", at_ms=300)
    with pytest.raises(UserError, match="must end after it starts"):
        enroll(e, "market", reserve_pct=0, from_ms=10, to_ms=10)


def test_events_of_a_change_carry_the_fields_of_alerts_md():
    a = Asset("d", "s-1", "us/s-1", "UTC", 1.0, 1.0, 1.0, 1.0)
    moved = replace(a, site_id="s-2", region_path="us/s-2")
    (registered,) = change_events(None, a, 7, changed_by="op", reason="")
    (move,) = change_events(a, moved, 8, changed_by="op", reason="feeder")
    (removed,) = change_events(moved, replace(moved, status="decommissioned"), 9, changed_by="op", reason="eol")
    for e in (registered, move, removed):
        assert set(e) == {"event_id", "kind", "subject", "node_path", "at", "detail"}
        assert all(isinstance(v, str) for v in e["detail"].values())
    assert (move["kind"], move["node_path"], move["detail"]["from_node_path"]) == ("device_moved", "us/s-2/d", "us/s-1/d")
    assert (removed["kind"], removed["at"], removed["detail"]["reason"]) == ("device_removed", 9, "eol")
    assert change_events(None, a, 7, changed_by="op", reason="") == [registered]  # the same fact, the same id
    assert change_events(a, replace(a, capacity_wh=2.0), 8, changed_by="op", reason="") == []


def _t(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def test_a_timeline_answers_with_the_version_valid_at_a_time_and_survives_its_export(tmp_path):
    a = Asset("d", "s-1", "us/s-1", "UTC", 1.0, 1.0, 1.0, 1.0)
    b = replace(a, site_id="s-2", region_path="us/s-2", programs=(Enrollment("peak_shaving", 20.0, 1_500, None),))
    gone = replace(b, status="decommissioned")
    rows = [{**{f: getattr(v, f) for f in ("device_id", "site_id", "region_path", "timezone", "capacity_wh",
                                          "max_charge_w", "max_discharge_w", "reserve_pct", "enrolled_peak_shaving",
                                          "status", "replaces")},
             "programs": [{"program": e.program, "reserve_pct": e.reserve_pct, **({"from_ms": e.from_ms} if e.from_ms
                                                                                 else {})} for e in v.enrollments],
             "valid_from": _t(start), "valid_to": None if end is None else _t(end)}
            for v, start, end in ((a, 1_000, 2_000), (b, 2_000, 3_000), (gone, 3_000, None))]
    for timeline in (AssetTimeline.from_rows(rows), _export(tmp_path, rows)):
        assert timeline.as_of("d", 999) is None  # not registered yet
        assert timeline.as_of("d", 1_000).region_path == timeline.as_of("d", 1_999).region_path == "us/s-1"
        assert timeline.as_of("d", 2_000).region_path == "us/s-2"
        assert timeline.as_of("d", 2_000).enrolled_in("peak_shaving", 2_000)
        assert timeline.as_of("d", 3_000) is None  # decommissioned
        assert timeline.assets["d"].region_path == "us/s-2" and timeline.assets.as_of is not None


def _export(tmp_path, rows):
    path = tmp_path / "history.csv"
    path.write_text(versions_to_csv(rows))
    return read_versions_csv(path)


def test_the_programs_cell_reads_names_and_reserves():
    assert parse_programs_cell("market; peak_shaving:12.5") == ((Enrollment("market"), Enrollment("peak_shaving", 12.5)), [])
    assert parse_programs_cell("") == (None, [])
