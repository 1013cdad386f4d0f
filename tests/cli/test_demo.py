"""`vpp demo --duration`: the whole platform comes up, readings flow, everything stops with a summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


def run_demo(state_dir, *options: str) -> tuple[dict[str, int], str]:
    """One ``vpp demo --duration 30``: the messages per topic of its summary, and its output."""
    result = subprocess.run([sys.executable, "-m", "cli", "demo", "--duration", "30", "--devices", "150",
                             "--state-dir", str(state_dir), *options], capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout[result.stdout.rindex("summary"):]
    counts = {m.group(1): int(m.group(2).replace(",", ""))
              for m in re.finditer(r"^\s+([a-z.]+)\s+([\d,]+)$", summary, re.M)}
    return counts, result.stdout


@pytest.mark.timeout(600)
def test_demo_shows_readings_flowing_and_stops_everything_and_runs_again_where_it_should_start(tmp_path):
    counts, _ = run_demo(tmp_path, "--keep-stack")
    assert counts["telemetry.raw"] > 150
    assert counts["telemetry.canonical"] > 150
    # Again on the kept stack: its broker still holds the topics, so the flows resume at their offsets and
    # do not canonicalize the first run's readings again, but for those read after their last snapshot
    # (at-least-once: a few seconds' worth, produced again identical; from offset 0 it would be all of them).
    kept, output = run_demo(tmp_path)
    assert "recovery stores reset" not in output
    assert kept["telemetry.canonical"] > 0.5 * kept["telemetry.raw"], kept
    assert kept["telemetry.canonical"] < kept["telemetry.raw"] + 0.5 * counts["telemetry.canonical"], (counts, kept)
    # Again after the stack stopped: the broker starts empty, so the flows must not resume at the earlier
    # offsets (they did, and skipped as many readings as the earlier runs had canonicalized).
    again, output = run_demo(tmp_path)
    assert "recovery stores reset" in output
    assert again["telemetry.raw"] > 150
    assert again["telemetry.canonical"] > 0.5 * again["telemetry.raw"], again
    status = subprocess.run([sys.executable, "-m", "cli", "status", "--json", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 1  # the demo stopped its services
    assert not any(s["healthy"] for s in json.loads(status.stdout)["services"].values())


def test_the_demo_dispatches_the_mid_level_node_with_most_devices():
    from vpp.assets import Asset
    from cli.demo import choose_dispatch

    def asset(device, path, max_w):
        return Asset(device, path.rsplit("/", 1)[1], path, "UTC", 10_000, max_w, max_w, 10)

    fleet = [asset("a", "us/ca/x/1/s1", 5000), asset("b", "us/ca/x/1/s2", 4000), asset("c", "us/ny/y/2/s3", 5000)]
    chosen = choose_dispatch(fleet, depth=2, share=0.3)
    assert (chosen.node_path, chosen.device_ids, chosen.target_w) == ("us/ca", frozenset({"a", "b"}), 2700.0)
    assert choose_dispatch([], depth=2) is None


def test_market_rows_show_forecast_plan_bid_award_and_the_measured_response():
    from cli.demo import market_rows

    t0, t1 = 1_795_000_200_000, 1_795_000_500_000
    facts = [
        {"interval_start": t0, "step": "fetched", "fact": {}},
        {"interval_start": t0, "step": "forecast", "fact": {"prices_usd_per_mwh": [41.25, 50.0]}},
        {"interval_start": t0, "step": "optimized", "fact": {"first_discharge_w": 3000.0, "first_charge_w": 0.0}},
        {"interval_start": t0, "step": "bid_submitted", "fact": {"pairs": [{"price_usd_per_mwh": 35.0, "quantity_w": 3000.0}]}},
        {"interval_start": t0, "step": "awarded", "fact": {"awarded_w": 3000.0, "clearing_price_usd_per_mwh": 44.5}},
        {"interval_start": t1, "step": "no_bid", "fact": {"reason": "no aggregate yet"}},
    ]
    rows = market_rows(facts, measured_w=2950.0)
    assert rows[0][1:] == ("41.2", "3,000", "3,000 W @ 35.0", "3,000 W @ 44.5", "2,950")
    assert rows[1][3] == "no bid: no aggregate yet" and rows[1][4] == "-" and rows[1][5] == ""
    assert [r[0] for r in market_rows(facts, measured_w=None, from_interval_ms=t1)] == ["11:15"], \
        "an earlier run's intervals are not this run's"


def test_the_measured_power_is_shown_within_each_awarded_interval():
    from datetime import UTC, datetime

    from cli.demo import market_rows, measure_interval_power

    t0 = 1_795_000_200_000
    facts = [{"interval_start": t0, "step": "awarded", "fact": {"awarded_w": -4000.0, "clearing_price_usd_per_mwh": 9.0}},
             {"interval_start": t0 + 300_000, "step": "no_bid", "fact": {"reason": "idle"}}]
    measured: dict = {}
    for offset_s, watts in ((0, -3900.0), (60, -4100.0), (60, -4100.0), (300, 50.0)):  # the same window twice: once
        start = datetime.fromtimestamp(t0 / 1000 + offset_s, UTC)
        measure_interval_power(measured, {"window_start": start, "battery_w": watts})
    measure_interval_power(measured, None)  # no window closed yet: nothing
    rows = market_rows(facts, measured)
    assert rows[0][4:] == ("-4,000 W @ 9.0", "-4,000")
    assert rows[1][5] == ""  # no award, nothing to compare
