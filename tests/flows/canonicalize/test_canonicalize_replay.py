"""`vpp replay canonicalize`: a dump of the spec's examples replays to exactly the spec's values and codes.

Each row is one raw message and what the spec says it becomes: a canonical
record (checked field by field) or a dead letter with its reason code. The
dump runs through the SAME dataflow as production, with file ports.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from vpp.config import Settings
from cli.replay import replay
from dialect_examples import SONNEN, SUNSPEC, TESLA
from documents import DELETE, edited

ASSETS_CSV = """device_id,site_id,region_path,timezone,capacity_wh,max_charge_w,max_discharge_w,reserve_pct
pw-000123,site-0042,us/ca/pge/94110/site-0042,America/Los_Angeles,13500,5000,5000,20
sn-000001,site-0043,de/by/ew/80331/site-0043,Europe/Berlin,10000,3300,3300,10
ss-000001,site-0044,us/ca/pge/94110/site-0044,America/Los_Angeles,20000,5000,5000,10
"""

def envelope(device_id, dialect, payload, received_at="2026-11-23T19:30:00.123Z"):
    return json.dumps({"device_id": device_id, "dialect": dialect, "received_at": received_at, "payload": payload})


# (row id, raw message text, expected canonical fields or reason code)
ROWS = [
    ("tesla spec example", envelope("pw-000123", "tesla-gateway/1", TESLA),
     {"ts": 1795462199598, "soc_pct": (69.1 - 5) / 0.95, "battery_w": -2400.0, "solar_w": 3100.0, "load_w": 860.2,
      "grid_w": 160.2, "grid_connected": True, "capacity_wh": 13500.0, "flags": [], "site_id": "site-0042",
      "region_path": "us/ca/pge/94110/site-0042", "dialect": "tesla-gateway/1"}),
    ("sonnen spec example (Berlin local time)", envelope("sn-000001", "sonnen/2", SONNEN),
     {"ts": 1795462200000, "soc_pct": 71.0, "battery_w": 1398.0, "solar_w": 0.0, "load_w": 1410.0, "grid_w": 12.0,
      "grid_connected": True, "capacity_wh": 10000.0, "flags": []}),
    ("sunspec spec example", envelope("ss-000001", "sunspec/802", SUNSPEC, "2026-11-24T16:55:00Z"),
     {"ts": 1795462493000, "soc_pct": 61.23, "battery_w": 2500.0, "solar_w": None, "load_w": None, "grid_w": 1520.0,
      "grid_connected": None, "capacity_wh": 13500.0, "flags": []}),
    ("tesla islanded", envelope("pw-000123", "tesla-gateway/1", edited(TESLA, ["grid_status"], "SystemIslandedActive")),
     {"grid_connected": False}),
    ("soc slightly above 100 is clamped", envelope("sn-000001", "sonnen/2", edited(SONNEN, ["USOC"], 101.5)),
     {"soc_pct": 100.0, "flags": ["soc_clamped"]}),
    ("soc far outside is invalid", envelope("sn-000001", "sonnen/2", edited(SONNEN, ["USOC"], 140)),
     {"soc_pct": None, "flags": ["soc_invalid"]}),
    ("NaN power is nulled", envelope("sn-000001", "sonnen/2", {**SONNEN, "Pac_total_W": "NAN"}).replace('"NAN"', "NaN"),
     {"battery_w": None, "flags": ["non_finite:battery_w"]}),
    ("negative solar becomes 0", envelope("sn-000001", "sonnen/2", {**SONNEN, "Production_W": -30, "Consumption_W": 1380}),
     {"solar_w": 0.0, "flags": ["solar_negative"]}),
    ("battery beyond 3x rating is an outlier", envelope("sn-000001", "sonnen/2", {**SONNEN, "Pac_total_W": 10000}),
     {"battery_w": None, "flags": ["power_outlier:battery_w"]}),
    ("powers that do not balance", envelope("sn-000001", "sonnen/2", {**SONNEN, "Consumption_W": 3000}),
     {"flags": ["imbalance"]}),
    ("sunspec not-implemented register is null",
     envelope("ss-000001", "sunspec/802", edited(SUNSPEC, ["models", "802", "SoC"], -32768), "2026-11-24T16:55:00Z"),
     {"soc_pct": None, "flags": []}),
    ("sunspec without meter", envelope("ss-000001", "sunspec/802", edited(SUNSPEC, ["models", "203"], DELETE),
                                       "2026-11-24T16:55:00Z"), {"grid_w": None}),
    ("not JSON", "{not json", "malformed_json"),
    ("not an object", "[1, 2, 3]", "malformed_json"),
    ("no device_id", json.dumps({"dialect": "sonnen/2", "received_at": "2026-11-23T19:30:00Z", "payload": SONNEN}),
     "missing_field:device_id"),
    ("device_id breaks its pattern", envelope("bad id!", "sonnen/2", SONNEN), "bad_field:device_id"),
    ("payload is a list", envelope("sn-000001", "sonnen/2", [1]), "bad_field:payload"),
    ("unknown dialect", envelope("sn-000001", "enphase/1", SONNEN), "unknown_dialect"),
    ("unknown device", envelope("xx-000001", "sonnen/2", SONNEN), "unknown_device"),
    ("string where a number belongs", envelope("sn-000001", "sonnen/2", {**SONNEN, "USOC": "71"}), "bad_field:payload.USOC"),
    ("sunspec register as boolean",
     envelope("ss-000001", "sunspec/802", edited(SUNSPEC, ["models", "802", "SoC"], True), "2026-11-24T16:55:00Z"),
     "bad_field:payload.models.802.SoC"),
    ("reading time missing", envelope("sn-000001", "sonnen/2", edited(SONNEN, ["Timestamp"], DELETE)),
     "missing_field:payload.Timestamp"),
    ("reading time unparseable", envelope("sn-000001", "sonnen/2", {**SONNEN, "Timestamp": "yesterday"}), "bad_timestamp"),
    ("reading from the future", envelope("sn-000001", "sonnen/2", {**SONNEN, "Timestamp": "2026-11-23 20:40:00"}),
     "future_timestamp"),
    ("reading over a day old", envelope("sn-000001", "sonnen/2", {**SONNEN, "Timestamp": "2026-11-21 20:30:00"}), "stale"),
]


_BASE_ROWS = {"pw-000123": "site-0042,us/ca/pge/94110/site-0042,America/Los_Angeles,13500,5000,5000,20",
              "sn-000001": "site-0043,de/by/ew/80331/site-0043,Europe/Berlin,10000,3300,3300,10",
              "ss-000001": "site-0044,us/ca/pge/94110/site-0044,America/Los_Angeles,20000,5000,5000,10"}


def _own_devices(rows):
    """Each canonical row gets a device of its own (same registry row as the spec's), so that
    variants of one example are not duplicates of each other (same device_id and ts)."""
    out, extra = [], []
    for i, (name, raw, expected) in enumerate(rows):
        if i >= 3 and isinstance(expected, dict):
            base = json.loads(raw)["device_id"]
            own = f"{base[:2]}-row{i:03d}"
            raw = raw.replace(f'"device_id": "{base}"', f'"device_id": "{own}"')
            extra.append(f"{own},{_BASE_ROWS[base]}")
        out.append((name, raw, expected))
    return out, ASSETS_CSV + "".join(line + "\n" for line in extra)


ROWS, ASSETS_CSV = _own_devices(ROWS)


def write_dump(path: Path, rows, opener=open) -> None:
    with opener(path, "wt") as fh:
        for offset, (_, raw, _) in enumerate(rows):
            fh.write(json.dumps({"topic": "telemetry.raw", "partition": 0, "offset": offset, "tstype": "create",
                                 "ts": 1795462493123, "broker": 0, "key": "k", "payload": raw}) + "\n")
        # the first example again: a duplicate (same device_id, ts) is dropped, not dead-lettered
        fh.write(json.dumps({"topic": "telemetry.raw", "partition": 0, "offset": len(rows), "tstype": "create",
                             "ts": 1795462493124, "broker": 0, "key": "k", "payload": rows[0][1]}) + "\n")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    (tmp / "assets.csv").write_text(ASSETS_CSV)
    write_dump(tmp / "dump.jsonl", ROWS)
    replay(Settings(), "canonicalize", tmp / "dump.jsonl", tmp / "assets.csv", tmp / "out")
    return tmp


def _outputs(out: Path):
    canonical = [json.loads(l) for l in open(out / "telemetry.canonical.jsonl")]
    dlq = [json.loads(l) for l in open(out / "telemetry.dlq.jsonl")]
    return canonical, dlq


def test_every_row_ends_canonical_or_dead_lettered_once(replayed):
    canonical, dlq = _outputs(replayed / "out")
    assert len(canonical) + len(dlq) == len(ROWS)  # the duplicate of row 0 is in neither
    assert all(line["topic"] == "telemetry.canonical" and line["key"] == line["value"]["device_id"] for line in canonical)


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_row_replays_to_the_spec(replayed, row):
    index = ROWS.index(row)
    _, raw, expected = row
    canonical, dlq = _outputs(replayed / "out")
    if isinstance(expected, str):
        [letter] = [d["value"] for d in dlq if d["value"]["source_offset"] == index]
        assert letter["reason"] == expected
        assert letter["source_topic"] == "telemetry.raw" and letter["source_partition"] == 0
        import base64
        assert base64.b64decode(letter["raw"]) == raw.encode()
    else:
        rejected = [d["value"] for d in dlq if d["value"]["source_offset"] == index]
        assert not rejected, rejected
        device = json.loads(raw)["device_id"]
        candidates = [c["value"] for c in canonical if c["value"]["device_id"] == device]
        matches = [c for c in candidates if all(_same(c[k], v) for k, v in expected.items())]
        assert matches, f"no canonical record of {device} matches {expected}: {candidates}"


def _same(got, want) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-9)
    return got == want


def test_replay_is_byte_identical_and_reads_gzip(replayed, tmp_path):
    write_dump(tmp_path / "dump.jsonl.gz", ROWS, opener=gzip.open)
    replay(Settings(), "canonicalize", tmp_path / "dump.jsonl.gz", replayed / "assets.csv", tmp_path / "out")
    for name in ("telemetry.canonical.jsonl", "telemetry.dlq.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (replayed / "out" / name).read_bytes()


def test_cli_replay_reports_counts(replayed, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "cli", "replay", "canonicalize", "--input",
                             str(replayed / "dump.jsonl"), "--assets", str(replayed / "assets.csv"), "--out",
                             str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    canonical, dlq = _outputs(replayed / "out")
    assert f"telemetry.canonical.jsonl: {len(canonical)} records" in result.stdout
    assert f"telemetry.dlq.jsonl: {len(dlq)} records" in result.stdout


def test_a_value_that_is_not_utf8_replays_with_its_original_bytes(tmp_path):
    """kcat's envelope cannot carry it: the dump keeps the exact bytes in payload_b64, the dead letter too."""
    import base64

    from sinks.dumps import dump_line

    garbage = b'{"device_id": "pw-\xff\xfe", "dialect": "sonnen/2"}'
    (tmp_path / "dump.jsonl").write_bytes(dump_line("telemetry.raw", 0, 0, 1, "pw-1", garbage))
    (tmp_path / "assets.csv").write_text(ASSETS_CSV)
    replay(Settings(), "canonicalize", tmp_path / "dump.jsonl", tmp_path / "assets.csv", tmp_path / "out")
    canonical, dlq = _outputs(tmp_path / "out")
    assert canonical == [] and [d["value"]["reason"] for d in dlq] == ["malformed_json"]
    assert base64.b64decode(dlq[0]["value"]["raw"]) == garbage


GOOD_LINE = b'{"topic": "telemetry.raw", "partition": 0, "offset": 0, "ts": 1, "key": "d", "payload": "{}"}\n'
BAD_DUMPS = {  # what a damaged dump looks like -> what the one error line says
    "a line that is not JSON": (GOOD_LINE + b"not json\n", "dump.jsonl:2: not a kcat -J dump line"),
    "a last line cut short": (GOOD_LINE * 3 + GOOD_LINE[:40], "dump.jsonl:4: not a kcat -J dump line"),
    "binary garbage": (bytes(range(256)) * 4, "dump.jsonl:1: not a kcat -J dump line"),
    "a gzip file cut short": (gzip.compress(GOOD_LINE * 2000)[:-20], "the file is damaged or cut short after line"),
}


@pytest.mark.parametrize("flow", ["canonicalize", "pipeline"])
@pytest.mark.parametrize("damage", list(BAD_DUMPS))
def test_a_damaged_dump_is_one_clear_error_and_leaves_the_last_output_alone(tmp_path, flow, damage):
    import subprocess
    import sys

    content, message = BAD_DUMPS[damage]
    (tmp_path / "dump.jsonl").write_bytes(content)
    (tmp_path / "assets.csv").write_text(ASSETS_CSV)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "telemetry.canonical.jsonl").write_text("an earlier run's output\n")
    result = subprocess.run([sys.executable, "-m", "cli", "replay", flow, "--input",
                             str(tmp_path / "dump.jsonl"), "--assets", str(tmp_path / "assets.csv"), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert (tmp_path / "out" / "telemetry.canonical.jsonl").read_text() == "an earlier run's output\n"


def test_a_user_error_raised_inside_the_dataflow_is_found_in_what_bytewax_raises():
    from vpp.errors import UserError
    from cli.replay import _user_error_in

    inner = UserError("dump.jsonl:7: not a kcat -J dump line")
    try:
        try:
            raise inner
        except UserError as exc:
            raise RuntimeError("error calling `StatefulSourcePartition.next_batch`") from exc
    except RuntimeError as outer:
        assert _user_error_in(outer) is inner
    assert _user_error_in(RuntimeError("a bug, not bad input")) is None
