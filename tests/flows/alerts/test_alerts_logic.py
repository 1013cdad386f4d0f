"""The alert rules of spec/alerts.md, one row per rule of its table, and the lifecycle's invariants.

Pure: :class:`AlertState` is fed event tuples (readings, aggregates, statuses, dead letters) in time
order; the tests read the alert records it emits.
"""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.alerts.logic import RuleConfig, command_event, dlq_threshold, shortfall_misses
from flows.alerts.state import AlertState

S = 1_000
T0 = 1_767_225_600_000  # 2026-01-01, a multiple of every tick
SITE = "us/ca/pge"
CFG = RuleConfig()


def readings(device: str, start_s: int, end_s: int, *, every_s: int = 5, soc=50.0, grid=True, site=SITE) -> list[tuple]:
    """A device's readings from ``start_s`` to before ``end_s`` (seconds after T0); soc/grid may be functions of t."""
    return [("r", T0 + t * S, device, site, soc(t) if callable(soc) else soc, grid(t) if callable(grid) else grid)
            for t in range(start_s, end_s, every_s)]


def in_time_order(*streams: list[tuple]) -> list[tuple]:
    return sorted((ev for s in streams for ev in s), key=lambda ev: ev[1])


def clocked(events: list[tuple]) -> list[tuple]:
    """The events, each followed by a clock at its time: time advances as the events' time does."""
    return [e for ev in events for e in (ev, ("c", ev[1], "reader"))]


def transitions(events: list[tuple], cfg: RuleConfig = CFG) -> list[tuple[str, str, str, int]]:
    """(rule, subject, state, at seconds after T0) of every alert record."""
    out = AlertState(cfg).step(clocked(events))
    return [(a["rule"], a["subject"], a["state"], (a["at"] - T0) // S) for a in out.alerts]


def background(end_s: int, n: int = 3) -> list[tuple]:
    """Healthy devices that keep event time moving."""
    return in_time_order(*(readings(f"bg{i}", 0, end_s) for i in range(n)))


# -- one row per rule of the spec's table ------------------------------------------------------------

def test_device_offline_fires_after_90_s_without_a_reading_and_resolves_after_2_readings() -> None:
    got = transitions(in_time_order(background(700), readings("d1", 0, 200), readings("d1", 400, 700)))
    # last reading at 195 s: silent for 90 s at 285 s (first tick at or after it); back at 400 and 405 s
    assert [t for t in got if t[1] == "d1"] == [("device_offline", "d1", "firing", 285),
                                               ("device_offline", "d1", "resolved", 405)]


def arriving(*streams: list[tuple[int, tuple]]) -> list[tuple]:
    """The events of ``(arrival s, event)`` streams in arrival order (an event's own time may lag its arrival)."""
    return [ev for _, ev in sorted((pair for s in streams for pair in s), key=lambda pair: pair[0])]


@pytest.mark.parametrize("lag_s", [lambda t: 120, lambda t: 85 + t % 11], ids=["beyond", "about-the-threshold"])
def test_a_device_whose_readings_lag_about_the_silence_allowed_fires_once_and_does_not_flap(lag_s) -> None:
    # d1 reports every 2 s from 200 s on, its readings 120 s (or 85-95 s) behind: one alert, not one a tick
    healthy = [(ev[1] // S - T0 // S, ev) for ev in background(1100)]
    lagging = [(t + 1, ("r", T0 + (t - lag_s(t)) * S, "d1", SITE, 50.0, True)) for t in range(200, 1000, 2)]
    got = [t for t in transitions(arriving(healthy, lagging)) if t[1] == "d1"]
    assert [(rule, state) for rule, _, state, _ in got] == [("device_offline", "firing")]
    # its clock set right at 1000 s: two current readings resolve it
    fixed = [(t + 1, ev) for t, ev in zip(range(1000, 1100, 5), readings("d1", 1000, 1100))]
    got = [t for t in transitions(arriving(healthy, lagging, fixed)) if t[1] == "d1"]
    assert [(state, at) for _, _, state, at in got][1:] == [("resolved", 1005)] and len(got) == 2


def test_device_offline_does_not_fire_for_89_s_of_silence() -> None:
    got = transitions(in_time_order(background(400), readings("d1", 0, 100), readings("d1", 184, 400)))
    assert got == []  # last reading at 95 s, next at 184 s: 89 s of silence


def test_device_offline_waits_one_offline_period_after_a_restart() -> None:
    state = AlertState(CFG)
    state.step(clocked(in_time_order(background(100), readings("d1", 0, 50))))
    state = pickle.loads(pickle.dumps(state))
    state.restarted()
    # restarted at 100 s; d1 has been silent since 45 s, so silent for 90 s from 135 s; judged from 190 s only
    out = state.step(clocked(background(300)[3 * 20:]))
    assert [(a["subject"], a["state"], (a["at"] - T0) // S) for a in out.alerts] == [("d1", "firing", 190)]
    assert out.alerts[0]["started_at"] == T0 + 135 * S  # when the silence reached 90 s: the same alert as without restart


def test_a_device_removed_from_the_registry_leaves_the_state_and_its_open_alerts_end() -> None:
    # d1 falls silent at 195 s (offline fires at 285 s), d2 has low SoC from 0 s (fires at 300 s), d3 from 300 s
    # (pending); all three are decommissioned at 400 s: firing alerts resolve, the pending one is dropped
    removed = [("x", T0 + 400 * S, d, f"device {d}: removed from the registry") for d in ("d1", "d2", "d3")]
    state = AlertState(CFG)
    out = state.step(clocked(in_time_order(background(1000), readings("d1", 0, 200), readings("d2", 0, 400, soc=5.0),
                                           readings("d3", 300, 400, soc=5.0), removed)))
    got = [(a["rule"], a["subject"], a["state"], (a["at"] - T0) // S) for a in out.alerts]
    assert got == [("low_soc", "d2", "pending", 0), ("device_offline", "d1", "firing", 285),
                   ("low_soc", "d2", "firing", 300), ("low_soc", "d3", "pending", 300),
                   ("device_offline", "d1", "resolved", 400), ("low_soc", "d2", "resolved", 400),
                   ("low_soc", "d3", "dropped", 400)]
    assert {a["summary"] for a in out.alerts[4:]} == {f"device {d}: removed from the registry" for d in ("d1", "d2", "d3")}
    assert set(state.devices) == {"bg0", "bg1", "bg2"} and state.tracks == {}


def test_a_device_silent_for_the_forget_horizon_leaves_the_state_once_and_its_offline_alert_ends() -> None:
    cfg = RuleConfig(forget_ms=600 * S)
    state = AlertState(cfg)
    out = state.step(clocked(in_time_order(background(2000), readings("d1", 0, 100))))
    got = [(a["rule"], a["subject"], a["state"], (a["at"] - T0) // S) for a in out.alerts]
    # last reading at 95 s: offline at 185 s, forgotten 600 s after its last reading (at the tick at or after 695 s)
    assert got == [("device_offline", "d1", "firing", 185), ("device_offline", "d1", "resolved", 695)]
    assert "no reading for 0.0 days, no longer watched" in out.alerts[-1]["summary"]
    assert "d1" not in state.devices and not [k for k in state.tracks if k[1] == "d1"]


def test_low_soc_fires_below_10_pct_for_300_s_and_resolves_at_15_pct() -> None:
    soc = lambda t: 9.0 if t < 600 else (12.0 if t < 700 else 15.0)  # noqa: E731
    got = transitions(readings("d1", 0, 800, soc=soc))
    assert got == [("low_soc", "d1", "pending", 0), ("low_soc", "d1", "firing", 300), ("low_soc", "d1", "resolved", 700)]


def test_low_soc_below_10_pct_for_less_than_300_s_is_dropped_without_firing() -> None:
    soc = lambda t: 9.0 if t < 295 else 20.0  # noqa: E731
    assert transitions(readings("d1", 0, 400, soc=soc)) == [("low_soc", "d1", "pending", 0), ("low_soc", "d1", "dropped", 295)]


def test_islanded_fires_after_30_s_off_grid_and_resolves_after_60_s_on_grid() -> None:
    grid = lambda t: not (100 <= t < 200)  # noqa: E731
    got = transitions(in_time_order(background(400, n=9), readings("d1", 0, 400, grid=grid)))
    assert got == [("islanded", "d1", "pending", 100), ("islanded", "d1", "firing", 130), ("islanded", "d1", "resolved", 260)]


def test_islanded_on_grid_for_less_than_60_s_does_not_resolve() -> None:
    grid = lambda t: not (100 <= t < 200 or 250 <= t)  # noqa: E731
    got = transitions(in_time_order(background(400, n=9), readings("d1", 0, 400, grid=grid)))
    assert got == [("islanded", "d1", "pending", 100), ("islanded", "d1", "firing", 130)]


def outage_fleet(islanded: dict[int, tuple[int, int]], end_s: int, n: int = 10, site: str = SITE) -> list[tuple]:
    """``n`` devices under ``site``; device i is off grid during islanded[i] = (from_s, to_s)."""
    streams = []
    for i in range(n):
        lo, hi = islanded.get(i, (0, 0))
        streams.append(readings(f"{site}-d{i}", 0, end_s, site=site, grid=lambda t, lo=lo, hi=hi: not (lo <= t < hi)))
    return in_time_order(*streams)


def test_grid_outage_fires_at_half_the_devices_islanded_for_60_s_with_no_device_alerts_below() -> None:
    out_site = outage_fleet({i: (100, 1000) for i in range(5)}, 1000)
    other = outage_fleet({}, 1000, n=10, site="us/tx/oncor")
    got = transitions(in_time_order(out_site, other))
    # us sees 25 %; us/ca and us/ca/pge 50 %: one alert, on the highest node (it inhibits the one below)
    assert [t for t in got if t[0] == "grid_outage"] == [("grid_outage", "us/ca", "pending", 105),
                                                         ("grid_outage", "us/ca", "firing", 165)]
    # the devices that went pending before the node did are dropped, none fires: one alert for the cause
    device = [t for t in got if t[0] == "islanded"]
    assert {t[2] for t in device} == {"pending", "dropped"} and len(device) == 10


def test_a_pending_outage_whose_share_falls_into_the_band_is_dropped_and_the_node_below_fires() -> None:
    # the first reports are all from the islanded state: us sees 100 %, goes pending (and inhibits us/ca);
    # from 30 s the rest of the country reports: us sees 33 %, under the 50 % the alert was raised for
    out_state = outage_fleet({i: (0, 1000) for i in range(5)}, 1000, n=5)
    rest = in_time_order(*(readings(f"tx{i}", 30, 1000, site="us/tx/oncor") for i in range(10)))
    got = [t for t in transitions(in_time_order(out_state, rest)) if t[0] == "grid_outage"]
    assert [(t[1], t[2]) for t in got] == [("us", "pending"), ("us", "dropped"), ("us/ca", "pending"), ("us/ca", "firing")]


def test_grid_outage_below_half_does_not_fire() -> None:
    got = transitions(outage_fleet({i: (100, 1000) for i in range(4)}, 1000))
    assert not [t for t in got if t[0] == "grid_outage"]
    assert len([t for t in got if t[0] == "islanded" and t[2] == "firing"]) == 4  # no cause above: each device alerts


def test_grid_outage_resolves_below_20_pct_for_300_s_and_not_at_30_pct() -> None:
    # 5 of 10 islanded from 100 s; 2 of them (20 %: not below) until 900 s, then 1 (10 %) until the end
    spans = {0: (100, 2000), 1: (100, 900), 2: (100, 400), 3: (100, 400), 4: (100, 400)}
    got = [t for t in transitions(outage_fleet(spans, 2000, site="us")) if t[0] == "grid_outage"]
    # back on grid at 400 s: 20 % from the tick at 405 s (not below), 10 % from 905 s: resolved 300 s later
    assert [(t[2], t[3]) for t in got] == [("pending", 105), ("firing", 165), ("resolved", 1205)]


def test_dlq_spike_fires_above_20_dead_letters_in_5_minutes_and_resolves_below_half_for_10_minutes() -> None:
    dead = [("d", T0 + (1000 + i) * S, "sonnen/2") for i in range(21)]  # 21 in 21 s, no baseline
    clock = [("c", T0 + t * S, "reader") for t in range(0, 3000, 5)]
    got = [t for t in transitions(in_time_order(dead, clock)) if t[0] == "dlq_spike"]
    # the 21st (at 1020 s) counts at the tick of 1020 s; below 10 once the letters of 1000-1019 s leave
    # the 5-minute window (it slides in 10 s steps), then 10 minutes more
    assert got[0] == ("dlq_spike", "sonnen/2", "firing", 1020)
    assert got[1][2] == "resolved" and 1020 + 300 + 600 - 10 <= got[1][3] <= 1020 + 300 + 600 + 10


def test_dlq_spike_at_20_does_not_fire_and_scales_with_the_hourly_rate() -> None:
    clock = [("c", T0 + t * S, "reader") for t in range(0, 5100, 5)]
    twenty = [("d", T0 + (1000 + i) * S, "x") for i in range(20)]
    assert not transitions(in_time_order(twenty, clock))
    # 120 in the hour before: 10 per 5 minutes, threshold 50; 45 in a minute is no spike, 51 is
    hour = [("d", T0 + (1300 + 25 * i) * S, "x") for i in range(120)]
    spike = lambda n: [("d", T0 + (5000 + i) * S, "x") for i in range(n)]  # noqa: E731
    assert not transitions(in_time_order(hour, spike(45), clock))
    assert transitions(in_time_order(hour, spike(51), clock)) == [("dlq_spike", "x", "firing", 5050)]  # the 51st at 5050 s
    assert dlq_threshold(120, CFG) == 50.0 and dlq_threshold(0, CFG) == 20.0


def shortfall_events(measured: list[float], allocated: float = 10_000.0, node: str = "us/ca") -> list[tuple]:
    events = [("s", T0, node, "c1", "accepted", allocated)]
    for i, w in enumerate(measured):
        start = T0 + i * 10 * S
        events.append(("a", start + 10 * S, node, start, w))
    return events


def test_dispatch_shortfall_fires_after_2_windows_off_allocation_and_resolves_after_2_within() -> None:
    got = transitions(shortfall_events([10_000, 8_000, 8_500, 9_600, 10_400, 9_999]))
    assert got == [("dispatch_shortfall", "us/ca", "firing", 30), ("dispatch_shortfall", "us/ca", "resolved", 50)]


@pytest.mark.parametrize(("measured", "allocated", "misses"), [
    (8_999.0, 10_000.0, True), (9_000.0, 10_000.0, False),  # 1 kW floor above 5 % of 10 kW
    (94_000.0, 100_000.0, True), (95_000.0, 100_000.0, False),  # 5 % of 100 kW
    (-5_000.0, -5_000.0, False), (500.0, 0.0, False),
])
def test_shortfall_allowance_is_the_larger_of_5_pct_and_1_kw(measured, allocated, misses) -> None:
    assert shortfall_misses(measured, allocated, CFG)[0] is misses


def test_dispatch_shortfall_of_one_window_does_not_fire_and_the_command_ending_resolves() -> None:
    assert transitions(shortfall_events([10_000, 5_000, 10_000, 5_000])) == []
    events = shortfall_events([5_000, 5_000]) + [("s", T0 + 25 * S, "us/ca", "c1", "expired", 10_000.0)]
    assert [t[2] for t in transitions(events)] == ["firing", "resolved"]


@pytest.mark.parametrize(("state", "kind"), [("accepted", "command_accepted"), ("rejected", "command_rejected"),
                                             ("superseded", "command_superseded"), ("expired", "command_expired"),
                                             ("reallocated", None)])
def test_dispatch_statuses_become_command_events_with_stable_ids(state, kind) -> None:
    status = {"command_id": "c1", "node_path": "us", "state": state, "requested_w": 1.0, "allocated_w": 1.0,
              "shortfall_w": 0.0, "devices": 1, "at": T0, "reason": None}
    event = command_event(status)
    assert (event and event["kind"]) == kind
    if event:
        assert command_event(dict(status)) == event and event["subject"] == "c1"


def test_firing_and_resolving_give_one_event_each() -> None:
    out = AlertState(CFG).step(clocked(shortfall_events([5_000, 5_000, 10_000, 10_000])))
    assert [e["kind"] for e in out.events] == ["alert_firing", "alert_resolved"]
    assert {e["subject"] for e in out.events} == {out.alerts[0]["alert_id"]}


def test_time_is_the_slowest_reader_that_is_not_idle() -> None:
    """A reader 60 s behind holds time back; one that sent nothing for 10 s of wall time is idle, not waited for."""
    state = AlertState(CFG)
    fast = readings("d1", 0, 400)
    slow = readings("d2", 0, 340)  # read 60 s later than d1's readings of the same time
    events = []
    for i, ev in enumerate(fast):
        events += [ev, ("c", ev[1], "fast", 1000.0)]
        if i >= 12:
            lagging = slow[i - 12]
            events += [lagging, ("c", lagging[1], "slow", 1000.0)]
    assert state.step(events).alerts == [] and state.watermark == T0 + 335 * S
    out = state.step([("c", T0 + 395 * S, "fast", 1009.0)])  # "slow" silent for 9 s: still waited for
    assert out.alerts == [] and state.watermark == T0 + 335 * S
    out = state.step([("c", T0 + 480 * S, "fast", 1011.0)])  # 11 s: idle, time moves on without it
    assert [(a["subject"], a["state"]) for a in out.alerts] == [("d2", "firing")] and state.watermark == T0 + 480 * S


# -- invariants ----------------------------------------------------------------------------------------

_LIFECYCLE = re.compile(r"((pending (dropped|firing( resolved)?|$))|(firing( resolved)?)) ?")


def lifecycles_are_valid(alerts: list[dict]) -> None:
    by_identity: dict[tuple[str, str], list[str]] = {}
    for a in alerts:
        by_identity.setdefault((a["rule"], a["subject"]), []).append(a["state"])
    for states in by_identity.values():
        text = " ".join(states)
        assert _LIFECYCLE.sub("", text + " ").strip() == "", text
    firing = [a["alert_id"] for a in alerts if a["state"] == "firing"]
    assert len(firing) == len(set(firing)), "an alert fired twice"


soc_series = st.lists(st.tuples(st.integers(1, 120), st.floats(0, 30)), min_size=1, max_size=80)


@given(soc_series)
def test_an_alert_never_fires_twice_for_one_condition(series) -> None:
    events, t = [], 0
    for gap, soc in series:
        t += gap
        events.append(("r", T0 + t * S, "d1", SITE, soc, soc > 5))
    lifecycles_are_valid(AlertState(CFG).step(clocked(events)).alerts)


@given(st.lists(st.floats(10, 14.99), min_size=1, max_size=60), st.booleans())
def test_a_soc_hovering_between_raise_and_clear_does_not_flap(hover, low_first) -> None:
    before = readings("d1", 0, 400, soc=5.0) if low_first else []
    after = [("r", T0 + (400 + 5 * i) * S, "d1", SITE, v, True) for i, v in enumerate(hover)]
    states = [a["state"] for a in AlertState(CFG).step(clocked(before + after)).alerts]
    assert states == (["pending", "firing"] if low_first else [])


event_strategy = st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["d1", "d2", "d3", "d4"]),
                                    st.floats(0, 30), st.booleans()), min_size=1, max_size=120)


def _events(draws) -> list[tuple]:
    events, t = [], 0
    for gap, device, soc, grid in draws:
        t += gap
        events.append(("r", T0 + t * S, device, "us/ca/pge" if device < "d3" else "us/tx", soc, grid))
    return events


@settings(max_examples=60)
@given(event_strategy, st.lists(st.integers(1, 30), min_size=1, max_size=10))
def test_the_result_does_not_depend_on_batching_or_snapshots(draws, cuts) -> None:
    events = clocked(_events(draws))
    whole = AlertState(CFG).step(events)
    state, alerts, i = AlertState(CFG), [], 0
    for size in cuts * (len(events) // max(sum(cuts), 1) + 1):
        out = state.step(events[i:i + size])
        alerts += out.alerts
        state = pickle.loads(pickle.dumps(state))  # the snapshot bytewax keeps between batches
        i += size
    assert alerts == whole.alerts
    lifecycles_are_valid(whole.alerts)


outage_draws = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 9), st.booleans()), min_size=1, max_size=300)


@settings(max_examples=60)
@given(outage_draws)
def test_no_device_alert_fires_while_an_outage_is_open_above_it(draws) -> None:
    """Ten devices under one site flip on and off grid at random: a device alert never fires below an open outage."""
    t, events = 0, []
    for gap, device, on_grid in draws:
        t += gap
        events.append(("r", T0 + t * S, f"d{device}", SITE, 50.0, on_grid))
    out = AlertState(CFG).step(clocked(events))
    open_outage: set[str] = set()
    for a in out.alerts:
        if a["rule"] == "grid_outage":
            (open_outage.add if a["state"] in ("pending", "firing") else open_outage.discard)(a["subject"])
        elif a["state"] == "firing":
            assert not open_outage & {"us", "us/ca", SITE}, a
    lifecycles_are_valid(out.alerts)
