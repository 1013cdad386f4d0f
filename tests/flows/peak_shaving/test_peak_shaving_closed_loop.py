"""Peak shaving end to end on the real broker: a simulated evening peak held under the node's threshold.

The simulator publishes 16 homes of ``us/ca`` on a December evening (dark: no solar) 8 times
faster than real time and follows ``device.commands``; canonicalize, aggregate, peak-shaving and
dispatch run as ``vpp run`` processes on the test's own topics and database. Enrolled devices
hold their energy for the program (``--program-reserve 100``); the others cover their own home.
An evening surge adds 1.5 kW to every home (2 min up, 4 min plateau, 2 min down).

Everything is judged from ``fleet.aggregates``, per 10 s window. The node's *unshaved* import
(what it would import without the program) is its ``grid_w`` plus the discharge of its enrolled
devices (their leaf records): a held battery is otherwise idle at night.

The simulator writes to the broker itself: the same loop through the device gateway (set points down the
WebSocket, readings up) is the dispatch closed loop's ``gateway`` variant, which peak shaving's commands take too.

- The first command answers the first window whose import exceeds the threshold.
- From then until the release the import stays within threshold +- deadband, except for what the
  unshaved import moved within the loop's delay (``LOOP_WINDOWS``: the settle time plus the
  aggregation, the flows' hops and the devices' next readings). The controller cannot act on a
  window before it has seen it.
- Only enrolled devices get set points.
- Release when the load falls back: once the surge is over, a 0 W command when the unshaved import
  is below threshold - hysteresis; then the enrolled batteries are idle and the import stays under
  the threshold. The batteries keep energy throughout: this scenario ends by the load, not by
  empty batteries.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict

import pytest

from real_services import VppProcesses, vpp_env
from sinks.kafka_tools import TopicCounter, read_topic
from vpp.serde import Serde

NODE = "us/ca"
SPEED = 6
WINDOW_MS = 10_000
START_MS = 1_797_388_680_000  # 2026-12-16T02:38:00Z: 18:38 in California, dark, near the evening peak
SURGE_AT_MS = START_MS + 240_000
SURGE_W, SURGE_RAMP_S, SURGE_HOLD_S = 1500, 120, 240
SURGE_END_MS = SURGE_AT_MS + (2 * SURGE_RAMP_S + SURGE_HOLD_S) * 1000
THRESHOLD_W, HYSTERESIS_W, DEADBAND_W, SETTLE_S = 60_000, 3_000, 1_000, 50
#: Windows between a change of the load and the batteries' answer: settle (5) + delay (up to 4).
LOOP_WINDOWS = 9

THRESHOLDS_TOML = f"""
[peak_shaving]
hysteresis_w = {HYSTERESIS_W}
deadband_w = {DEADBAND_W}
settle_s = {SETTLE_S}
command_s = 120
[peak_shaving.nodes."{NODE}"]
threshold_w = {THRESHOLD_W}
"""


class _Loop:
    """``fleet.aggregates`` and ``dispatch.commands`` as they arrive."""

    def __init__(self, settings, enrolled: set[str]):
        self.topics = settings.topic("fleet.aggregates"), settings.topic("dispatch.commands")
        self.counter = TopicCounter(settings, list(self.topics), from_beginning=True)
        self.serde = Serde.from_settings(settings)
        self.enrolled = enrolled
        self.node: dict[int, dict] = {}  # window_end -> the node's aggregate
        self.shaving_w: dict[int, float] = defaultdict(float)  # window_end -> discharge of enrolled devices
        self.energy_wh: dict[int, float] = defaultdict(float)  # window_end -> energy above reserve of enrolled devices
        self.commands: list[dict] = []

    def poll(self) -> None:
        for m in self.counter.poll(0.5):
            r = self.serde.decode(m.value())
            if m.topic() == self.topics[1]:
                self.commands.append(r)
            elif r["node_path"] == NODE:
                self.node[r["window_end"]] = r
            elif r["node_path"].rsplit("/", 1)[-1] in self.enrolled:
                self.shaving_w[r["window_end"]] += r["battery_w"]
                self.energy_wh[r["window_end"]] += r["energy_available_wh"]

    def release(self) -> dict | None:
        """The release after the surge began (None yet): 0 W for two windows (a 0 W follow-up runs command_s)."""
        found = [c for c in self.commands if c["start"] > SURGE_AT_MS and c["target_w"] == 0.0
                 and c["end"] - c["start"] == 2 * WINDOW_MS]
        return found[0] if found else None

    def windows(self) -> list[int]:
        return sorted(self.node)

    def unshaved_w(self, end: int) -> float:
        return self.node[end]["grid_w"] + self.shaving_w[end]


def _moved_within(series: list[float], i: int, k: int) -> tuple[float, float]:
    """How far ``series[i]`` rose above, and fell below, the values of the ``k`` windows before it."""
    before = series[max(0, i - k):i] or [series[i]]
    return max(0.0, series[i] - min(before)), max(0.0, max(before) - series[i])


@pytest.mark.timeout(600)
def test_an_evening_peak_is_held_under_the_threshold_by_enrolled_batteries(isolated_settings, tmp_path):
    settings = isolated_settings
    thresholds = tmp_path / "peak-shaving.toml"
    thresholds.write_text(THRESHOLDS_TOML)
    assets_csv = tmp_path / "assets.csv"
    env = vpp_env(settings, VPP_ASSETS_REFRESH_S="1", VPP_WINDOW_S="10", VPP_STALENESS_S="30")
    with VppProcesses(env, tmp_path / "procs.log") as procs:
        for flow in ("canonicalize", "aggregate", "dispatch"):
            procs.start("run", flow)
        procs.start("run", "peak-shaving", VPP_CONFIG=str(thresholds))
        procs.start("simulate", "--devices", "16", "--depth", "3", "--fanout", "1", "--seed", "1", "--rate-s", "2",
                    "--speed", str(SPEED), "--no-faults", "--start", str(START_MS), "--assets-out", str(assets_csv),
                    "--program-reserve", "100", "--surge-at", str(SURGE_AT_MS), "--surge-w", str(SURGE_W),
                    "--surge-ramp-s", str(SURGE_RAMP_S), "--surge-hold-s", str(SURGE_HOLD_S))
        wall0 = time.monotonic()
        procs.wait_for(assets_csv.exists, 60, "the simulator to register its fleet")
        with open(assets_csv) as fh:
            enrolled = {row["device_id"] for row in csv.DictReader(fh) if row["enrolled_peak_shaving"] == "true"}
        loop = _Loop(settings, enrolled)
        procs.wait_for(lambda: loop.node, 120, f"the first aggregate of {NODE}", poll=loop.poll)
        event_now = START_MS + (time.monotonic() - wall0) * SPEED * 1000
        print(f"first aggregate {time.monotonic() - wall0:.1f} s after the simulator started, "
              f"event time +{(event_now - START_MS) / 1000:.0f} s")
        assert event_now < SURGE_AT_MS - 60_000, "the flows started too late for the surge: the loop was not live"

        def released_and_settled() -> bool:
            release = loop.release()
            return release is not None and max(loop.node) >= release["start"] + (LOOP_WINDOWS + 3) * WINDOW_MS

        procs.wait_for(released_and_settled, 300, "the release after the surge and the loop's delay", poll=loop.poll)
    setpoints = read_topic(settings, settings.topic("device.commands"), loop.serde.decode)

    ends = loop.windows()
    unshaved = [loop.unshaved_w(e) for e in ends]
    grid = [loop.node[e]["grid_w"] for e in ends]
    # the scenario: below the threshold before the surge, well above it on the plateau
    assert max(u for e, u in zip(ends, unshaved) if e <= SURGE_AT_MS) < THRESHOLD_W - HYSTERESIS_W
    assert max(unshaved) > THRESHOLD_W + 5_000

    # engage: the first command answers the first window above the threshold
    first_over = next(e for e, g in zip(ends, grid) if g > THRESHOLD_W)
    engage = loop.commands[0]
    assert (engage["start"], engage["node_path"], engage["program"]) == (first_over, NODE, "peak_shaving")
    assert engage["target_w"] == pytest.approx(loop.node[first_over]["grid_w"] - THRESHOLD_W, abs=0.1)

    # held: within threshold +- deadband, but for what the load moved within the loop's delay
    release = loop.release()
    held = [i for i, e in enumerate(ends) if first_over + LOOP_WINDOWS * WINDOW_MS < e <= release["start"]]
    misses = []
    for i in held:
        rose, fell = _moved_within(unshaved, i, LOOP_WINDOWS)
        if not THRESHOLD_W - DEADBAND_W - fell - 1.0 <= grid[i] <= THRESHOLD_W + DEADBAND_W + rose + 1.0:
            misses.append((ends[i], round(grid[i]), round(unshaved[i]), round(rose), round(fell)))
    within = sum(abs(grid[i] - THRESHOLD_W) <= DEADBAND_W for i in held)
    print(f"threshold {THRESHOLD_W} W: unshaved peak {max(unshaved):.0f} W; over {len(held)} held windows the import "
          f"ran {min(grid[i] for i in held):.0f}..{max(grid[i] for i in held):.0f} W, {within} within the deadband; "
          f"{len(loop.commands)} commands; enrolled energy {loop.energy_wh[first_over]:.0f} -> "
          f"{loop.energy_wh[release['start']]:.0f} Wh")
    for i, e in enumerate(ends):  # shown when the test fails: the loop, window by window
        targets = [round(c["target_w"]) for c in loop.commands if c["start"] == e]
        print(f"+{(e - START_MS) // 1000:>4} s  unshaved {unshaved[i]:>6.0f}  import {grid[i]:>6.0f}  "
              f"shaving {loop.shaving_w[e]:>5.0f}  commands {targets}")
    assert held and not misses, misses
    assert max(loop.shaving_w[ends[i]] for i in held) > 5_000  # the batteries really carried the excess
    assert loop.energy_wh[release["start"]] > 0.5 * loop.energy_wh[first_over]  # energy lasted: ended by the load

    # only enrolled devices take part
    commanded = {s["device_id"] for s in setpoints if s["setpoint_w"] != 0.0}
    assert commanded and commanded <= enrolled

    # release when the load falls back: below threshold - hysteresis underneath, then idle batteries
    assert release["start"] > SURGE_END_MS - SURGE_RAMP_S * 1000
    assert loop.unshaved_w(release["start"]) < THRESHOLD_W - HYSTERESIS_W
    after = [e for e in ends if e > release["start"] + LOOP_WINDOWS * WINDOW_MS]
    assert after and all(abs(loop.shaving_w[e]) < 1.0 and loop.node[e]["grid_w"] < THRESHOLD_W for e in after)
