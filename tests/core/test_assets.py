"""The asset registry: CSV validation with line numbers, and imports that are all or nothing."""

import uuid

import pytest

from vpp.assets import Asset, AssetsCsvError, assets_to_csv, load_assets_csv, parse_assets_csv

HEADER = "device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct"
GOOD = "pw-000001,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,5000,5000,20"


def test_a_valid_file_parses_in_order_with_enrollment_defaulting_to_true():
    text = "\n".join([HEADER, GOOD, "sb-000002,site-0002,us/tx/oncor/75001/site-0002,America/Chicago,10000,4800,4800,10.5"])
    assets = parse_assets_csv(text)
    assert assets == [
        Asset("pw-000001", "site-0001", "us/ca/pge/94110/site-0001", "America/Los_Angeles", 13500, 5000, 5000, 20, True),
        Asset("sb-000002", "site-0002", "us/tx/oncor/75001/site-0002", "America/Chicago", 10000, 4800, 4800, 10.5, True),
    ]
    assert assets[0].node_path == "us/ca/pge/94110/site-0001/pw-000001"


def test_the_optional_enrollment_column_is_read_when_present():
    text = f"{HEADER},enrolled_peak_shaving\n{GOOD},false\n" + GOOD.replace("pw-000001", "pw-000002") + ",\n"
    assert [a.enrolled_peak_shaving for a in parse_assets_csv(text)] == [False, True]


BAD_ROWS = [
    ("pw 1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,5000,5000,20", "device_id 'pw 1'"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,Mars/Olympus,13500,5000,5000,20", "timezone 'Mars/Olympus'"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0009,America/Los_Angeles,13500,5000,5000,20", "must end with its site_id"),
    ("pw-1,site-0001,us//site-0001,America/Los_Angeles,13500,5000,5000,20", "region_path"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,lots,5000,5000,20", "capacity_wh 'lots' is not a number"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,0,5000,5000,20", "capacity_wh '0' must be greater than 0"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,-5,5000,20", "max_charge_w '-5' must not be negative"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,5000,nan,20", "max_discharge_w 'nan' is not a finite"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,5000,5000,120", "reserve_pct '120' must be at most 100"),
    ("pw-1,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,5000", "expected 8 fields, found 6"),
    ("pw-000001,site-0001,us/ca/pge/94110/site-0001,America/Los_Angeles,13500,5000,5000,20", "duplicate device_id 'pw-000001' (first on line 2)"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS)
def test_a_bad_row_is_reported_with_its_line_number(row, message):
    text = "\n".join([HEADER, GOOD, GOOD.replace("pw-000001", "pw-000003"), row])
    with pytest.raises(AssetsCsvError) as err:
        parse_assets_csv(text)
    assert err.value.lines == [4]
    assert "line 4: " in str(err.value) and message in str(err.value)
    assert "nothing imported" in str(err.value)


def test_every_bad_line_is_listed_not_only_the_first():
    text = "\n".join([HEADER, BAD_ROWS[0][0], GOOD, "", BAD_ROWS[1][0].replace("pw-1", "pw-2")])
    with pytest.raises(AssetsCsvError) as err:
        parse_assets_csv(text)
    assert err.value.lines == [2, 5]


def test_a_wrong_header_is_line_1():
    with pytest.raises(AssetsCsvError, match="line 1: bad header: missing column"):
        parse_assets_csv("device_id,site_id\npw-1,site-1\n")


def test_load_assets_csv_keys_the_registry_by_device(tmp_path):
    path = tmp_path / "assets.csv"
    path.write_text(HEADER + "\n" + GOOD + "\n")
    assert list(load_assets_csv(path)) == ["pw-000001"]
    assert parse_assets_csv(path) == parse_assets_csv(str(path))


# -- integration: PostgreSQL from the stack ---------------------------------------------------


def _fleet_rows(tag: str, n: int) -> list[Asset]:
    return [
        Asset(f"{tag}-{i:03d}", f"site-{tag}-{i:03d}", f"us/ca/pge/94110/site-{tag}-{i:03d}", "America/Los_Angeles",
              13500, 5000, 5000, 20, i % 2 == 0)
        for i in range(n)
    ]


def test_import_upserts_and_a_moved_device_updates_its_row(stack, tmp_path):
    from sinks.asset_registry import import_assets_file, list_assets, upsert_assets

    tag = "t" + uuid.uuid4().hex[:8]
    path = tmp_path / "assets.csv"
    assets = _fleet_rows(tag, 5)
    path.write_text(assets_to_csv(assets))
    counts = import_assets_file(stack.postgres_dsn, path)
    assert (counts.inserted, counts.updated, counts.unchanged) == (5, 0, 0)

    moved = Asset(assets[0].device_id, "site-new", "us/tx/oncor/75001/site-new", "America/Chicago", 13500, 5000, 5000, 20)
    counts = upsert_assets(stack.postgres_dsn, [moved] + assets[1:])
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 4)
    mine = [a for a in list_assets(stack.postgres_dsn) if a.device_id.startswith(tag)]
    assert sorted(mine, key=lambda a: a.device_id) == [moved] + assets[1:]
    assert list_assets(stack.postgres_dsn, prefix=f"us/tx/oncor/75001/site-new/{moved.device_id}") == [moved]
    assert moved in list_assets(stack.postgres_dsn, prefix="us/tx")
    assert moved not in list_assets(stack.postgres_dsn, prefix="us/t")  # a prefix is whole path segments


def test_a_malformed_row_imports_nothing(stack, tmp_path):
    from sinks.asset_registry import import_assets_file, list_assets

    tag = "t" + uuid.uuid4().hex[:8]
    lines = assets_to_csv(_fleet_rows(tag, 4)).splitlines()
    lines[3] = lines[3].replace("America/Los_Angeles", "Nowhere/Special")
    path = tmp_path / "assets.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AssetsCsvError) as err:
        import_assets_file(stack.postgres_dsn, path)
    assert err.value.lines == [4]
    assert not [a for a in list_assets(stack.postgres_dsn) if a.device_id.startswith(tag)]


def test_a_row_the_database_refuses_rolls_back_the_whole_import(stack):
    import psycopg

    from sinks.asset_registry import list_assets, upsert_assets
    from vpp.db import migrate

    migrate(stack.postgres_dsn)
    tag = "t" + uuid.uuid4().hex[:8]
    rows = _fleet_rows(tag, 3)
    broken = Asset(f"{tag}-bad", "site-x", "us/site-x", "UTC", 13500, 5000, 5000, 101)  # violates the table's CHECK
    with pytest.raises(psycopg.errors.CheckViolation):
        upsert_assets(stack.postgres_dsn, rows + [broken])
    assert not [a for a in list_assets(stack.postgres_dsn) if a.device_id.startswith(tag)]


def test_the_cli_imports_reports_counts_and_lists(stack, tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("VPP_POSTGRES_DSN", stack.postgres_dsn)
    tag = "t" + uuid.uuid4().hex[:8]
    path = tmp_path / "assets.csv"
    path.write_text(assets_to_csv(_fleet_rows(tag, 3)))
    assert main(["assets", "import", str(path), "--no-events", "--state-dir", str(tmp_path)]) == 0
    assert "imported 3 asset(s)" in capsys.readouterr().out
    assert main(["assets", "list", "--prefix", f"us/ca/pge/94110/site-{tag}-001", "--json", "--state-dir", str(tmp_path)]) == 0
    assert f'"{tag}-001"' in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n" + GOOD.replace("13500", "-1") + "\n")
    assert main(["assets", "import", str(bad), "--state-dir", str(tmp_path)]) == 1
    assert "line 2: capacity_wh '-1'" in capsys.readouterr().err


def test_the_csv_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """`vpp demo` loads the simulator's CSV as soon as it appears: it must never see half a file."""
    import os

    from vpp.assets import write_assets_csv

    target = tmp_path / "assets.csv"
    first = [Asset(f"d{i}", f"site-{i}", f"us/ca/site-{i}", "UTC", 13_500.0, 5_000.0, 5_000.0, 10.0) for i in range(3)]
    write_assets_csv(target, first)
    assert load_assets_csv(target) == {a.device_id: a for a in first}

    def interrupted(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError):
        write_assets_csv(target, first + [Asset("d9", "site-9", "us/ca/site-9", "UTC", 1.0, 1.0, 1.0, 1.0)])
    assert load_assets_csv(target) == {a.device_id: a for a in first}  # the earlier file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["assets.csv"]  # no partial file left behind
