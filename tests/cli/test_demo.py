"""`vpp demo --duration`: the whole platform comes up, readings flow, everything stops with a summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


def run_demo(state_dir, *options: str, duration_s: int = 30) -> tuple[dict[str, int], str]:
    """One ``vpp demo --duration 30``: the messages per topic of its summary, and its output."""
    result = subprocess.run([sys.executable, "-m", "cli", "demo", "--duration", str(duration_s), "--devices", "150",
                             "--state-dir", str(state_dir), *options], capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout[result.stdout.rindex("summary"):]
    counts = {m.group(1): int(m.group(2).replace(",", ""))
              for m in re.finditer(r"^\s+([a-z.]+)\s+([\d,]+)$", summary, re.M)}
    return counts, result.stdout


@pytest.mark.integration  # starts a stack of its own and the whole platform
@pytest.mark.timeout(600)
def test_demo_shows_readings_flowing_and_stops_everything_and_runs_again_where_it_should_start(tmp_path):
    # the first run also shows the alerts: devices taken offline and a state islanded, then back (at speed 2:
    # the scenario's 40 s are 20 s of wall time)
    counts, output = run_demo(tmp_path, "--keep-stack", "--speed", "2", "--alerts-after", "3", duration_s=55)
    assert counts["telemetry.raw"] > 150
    assert counts["telemetry.canonical"] > 150
    scenario = re.search(r"took ([\w, -]+) offline and islanded every device under (\S+)", output)
    assert scenario, output[-3000:]
    offline, islanded = scenario.group(1).split(", "), scenario.group(2)
    shown = set(re.findall(r"^\s+[\d:]{8}\s+(firing|resolved)\s+(\w+)\s+(\S+)", output[output.rindex("summary"):], re.M))
    assert {("firing", "grid_outage", islanded), ("resolved", "grid_outage", islanded)} <= shown, output[-3000:]
    assert any({("firing", "device_offline", d), ("resolved", "device_offline", d)} <= shown for d in offline), output[-3000:]
    assert not any(subject.startswith(islanded + "/") for _, _, subject in shown), "an alert under the outage"
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
    from cli.demo_market import market_rows

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


def test_the_demo_islands_the_smallest_state_and_takes_devices_elsewhere_offline_then_brings_them_back(tmp_path):
    from vpp.assets import Asset
    from cli.demo_alerts import AlertConditions, AlertScenario, choose_conditions

    def asset(device, path):
        return Asset(device, path.rsplit("/", 1)[1], path, "UTC", 10_000, 5000, 5000, 10)

    fleet = [asset("a", "us/ca/x/1/s1"), asset("b", "us/ca/x/1/s2"), asset("c", "us/ny/y/2/s3"),
             asset("d", "us/tx/z/3/s4"), asset("e", "us/tx/z/3/s5"), asset("f", "us/tx/z/3/s6")]
    assert choose_conditions(fleet, avoid="us/tx", offline=3) == AlertConditions(("a", "b"), "us/ny")
    assert choose_conditions(fleet, avoid=None, offline=1) == AlertConditions(("a",), "us/ny")
    assert choose_conditions([], avoid=None) is None

    scenario = AlertScenario.in_state_dir(tmp_path)
    scenario.plan(AlertConditions(("a", "b"), "us/ny"), start=100.0, speed=2.0)
    assert scenario.step(99.0) is None and scenario.offline_file.read_text() == ""
    assert "took a, b offline" in scenario.step(100.0)
    assert scenario.offline_file.read_text() == "a\nb\n"
    assert scenario.conditions_file.read_text() == "islanded us/ny\n"
    assert scenario.step(100.0 + scenario.hold_s - 1) is None
    assert "back" in scenario.step(100.0 + scenario.hold_s)  # 40 simulated s at speed 2
    assert scenario.hold_s == 20.0
    assert scenario.offline_file.read_text() == scenario.conditions_file.read_text() == ""
    assert scenario.step(1e9) is None


@pytest.mark.parametrize("speed, offline_s, hold_wall_s", [(1, 15, 40), (2, 15, 20), (10, 30, 5.5), (30, 90, 115 / 30)])
def test_a_device_is_offline_in_the_demo_after_three_missed_readings_and_at_least_3_wall_seconds(speed, offline_s,
                                                                                                 hold_wall_s, tmp_path):
    from cli.demo_alerts import AlertConditions, AlertScenario, demo_alert_settings

    assert demo_alert_settings(speed)["VPP_ALERT_OFFLINE_AFTER_S"] == f"{offline_s:g}"
    scenario = AlertScenario.in_state_dir(tmp_path)
    scenario.plan(AlertConditions(("a",), "us/ny"), start=0.0, speed=speed)
    assert scenario.hold_s == pytest.approx(hold_wall_s)  # the silence passes the threshold with 25 simulated s to spare


def test_the_measured_power_is_shown_within_each_awarded_interval():
    from datetime import UTC, datetime

    from cli.demo_market import market_rows, measure_interval_power

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


@pytest.mark.parametrize("utc", ["2026-12-07T00:00:00", "2026-12-07T06:29:00", "2026-12-07T06:40:00",
                                 "2026-12-07T13:07:30", "2026-12-07T18:30:00", "2026-12-07T23:59:59"])
def test_the_demo_market_is_at_its_morning_ramp_whatever_the_hour_the_demo_starts(utc):
    from datetime import UTC, datetime

    from cli.demo_market import DEMO_MARKET_LOCAL_START_H, morning_utc_offset_h, utc_zone
    from devtools.market.prices import PriceModel

    now_ms = int(datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp() * 1000)
    offset_h = morning_utc_offset_h(now_ms)
    local_h = ((now_ms / 3_600_000) + offset_h) % 24
    assert abs(local_h - DEMO_MARKET_LOCAL_START_H) <= 7.5 / 60  # whole quarter hours: within 7.5 minutes
    assert -12 <= offset_h < 12 and (offset_h * 4).is_integer()
    PriceModel(utc_offset_h=offset_h)  # the market simulator takes it
    assert utc_zone(offset_h) == f"UTC{'-' if offset_h < 0 else '+'}{int(abs(offset_h)):02d}:{int(abs(offset_h) % 1 * 60):02d}"


def test_utc_zones_read_as_operators_write_them():
    from cli.demo_market import utc_zone

    assert [utc_zone(h) for h in (-8.0, -0.25, 0.0, 5.75, 11.5)] == ["UTC-08:00", "UTC-00:15", "UTC+00:00", "UTC+05:45",
                                                                      "UTC+11:30"]


def test_from_the_demo_markets_morning_the_fleets_plan_bids_and_is_awarded_within_minutes():
    """The premise of the demo's market time zone: on any day, the first intervals from 06:30 local move the plan.

    The autobidder's chain without the broker: yesterday's prices as the forecast (the demo trains no model), the
    day-long plan of the demo fleet (300 devices of 13.5 kWh and 5 kW, half full), its bid for the next interval
    cleared at the simulated price, the fleet's charge following the award."""
    from datetime import UTC, datetime

    from cli.demo_market import morning_utc_offset_h
    from devtools.market.prices import PriceModel, price_series
    from flows.forecast_worker.flow import persistence_forecast
    from models.bids import build_bid, net_quantity_w
    from models.optimize import Battery, PricePoint, plan

    interval, day = 300_000, 288
    capacity_wh, power_w = 300 * 13_500.0, 300 * 5_000.0
    awarded = []
    for start in ("2026-03-02T17:00:00", "2026-07-11T05:00:00", "2026-12-07T21:12:00"):
        now_ms = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
        model = PriceModel(utc_offset_h=morning_utc_offset_h(now_ms))
        first = now_ms - now_ms % interval + 2 * interval  # the autobidder bids two intervals ahead
        soc = 50.0
        for k in range(5):
            origin = first + k * interval
            history = price_series(origin - 2 * day * interval, 2 * day, model=model).tolist()
            forecast = persistence_forecast(history, origin - 2 * day * interval, origin, day)
            points = [PricePoint(datetime.fromtimestamp((origin + i * interval) / 1000, UTC), p)
                      for i, p in enumerate(forecast)]
            fleet = Battery(capacity_wh=capacity_wh, max_charge_w=power_w, max_discharge_w=power_w, soc_pct=soc,
                            reserve_pct=10.0, efficiency=0.9, degradation_usd_per_mwh=20.0)
            award_w = net_quantity_w(build_bid(plan(points, fleet), points, fleet),
                                     float(price_series(origin, 1, model=model)[0]))
            awarded.append(award_w)
            soc -= award_w / 12 / capacity_wh * 100
    assert sum(abs(w) > 1 for w in awarded) >= 9, awarded  # of 15 intervals: most of the first 2.5 minutes at speed 10
