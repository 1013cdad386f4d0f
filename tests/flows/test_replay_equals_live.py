"""Replay equals live: canonicalize -> aggregate -> dispatch on the real broker, then the same flows over the dumps.

The simulator publishes a faulty fleet for about 75 s of real time; the three flows run as `vpp run` on the
test's own topics, and one dispatch command is sent in the middle. Then every topic is dumped (`vpp dump`),
each flow is replayed over its dumped inputs (`vpp replay`), and outputs are compared record by record under
the rules of ``replay_compare`` (what legitimately depends on the wall time; everything else exactly).

dispatch: live, the flow's clock also moves with the wall clock between readings (window checks, expiry,
staleness are anchored on it); replay has event time only. So the times at which set points are re-sent or
re-allocated differ, and what is compared is what does not depend on them: the command's first status
(accepted or rejected) with its requested power, the set of devices given a set point, and the sum of the set
points of the command's first allocation (the same devices with the same readings behind them).
"""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest
from real_services import VppProcesses, vpp_env, wait_for

from replay_compare import (AGG_KEY, canonical_key, compare_aggregates, diff_keyed, dlq_key, dump_values, keyed, live_span,
                            merge_by_timestamp, missing_live, read_jsonl, replay_canonicalize, unprefixed)
from sinks.kafka_tools import TopicCounter

DURATION_S = 75
FAULTS = ["--fault-garbage", "0.01", "--fault-nan", "0.01", "--fault-duplicate", "0.01", "--fault-not-implemented",
          "0.02", "--fault-out-of-order", "0.01", "--fault-clock-skew", "0", "--fault-late", "0", "--fault-offline", "0"]


def first_allocation(setpoints: list[dict]) -> dict[str, float]:
    start = min(s["start"] for s in setpoints)
    return {s["device_id"]: s["setpoint_w"] for s in setpoints if s["start"] == start}


@pytest.mark.timeout(420)
def test_each_flow_replayed_over_its_dumped_inputs_gives_what_it_gave_live(isolated_settings, tmp_path):
    settings = isolated_settings
    env = vpp_env(settings, VPP_ASSETS_REFRESH_S="1")
    assets_csv = tmp_path / "assets.csv"
    with VppProcesses(env, tmp_path / "procs.log") as procs:
        sim = procs.start("simulate", "--devices", "40", "--seed", "21", "--rate-s", "2", "--duration", str(DURATION_S),
                          "--assets-out", str(assets_csv), *FAULTS)
        procs.wait_for(assets_csv.exists, 90, "the simulator to register its fleet")
        for flow in ("canonicalize", "aggregate", "dispatch"):
            procs.start("run", flow)
        canonical = TopicCounter(settings, [settings.topic("telemetry.canonical")], from_beginning=True)
        seen = {"first": None, "last": 0}

        def note_times() -> None:
            for m in canonical.poll(0.5):
                ts = m.timestamp()[1]
                seen["first"] = ts if seen["first"] is None else min(seen["first"], ts)
                seen["last"] = max(seen["last"], ts)

        procs.wait_for(lambda: seen["first"] is not None and seen["last"] - seen["first"] > DURATION_S * 400, 180,
                       "canonical readings of the first half", poll=note_times)
        canonical.close()
        with open(assets_csv) as fh:
            assets = list(csv.DictReader(fh))
        states = defaultdict(list)
        for a in assets:
            states["/".join(a["region_path"].split("/")[:2])].append(a)
        node, members = max(states.items(), key=lambda kv: len(kv[1]))
        watts = round(0.2 * sum(float(a["max_discharge_w"]) for a in members))
        procs.run("dispatch", "send", node, "--watts", str(watts), "--minutes", "1", "--command-id", "replay-vs-live")
        wait_for(lambda: sim.poll() is not None, DURATION_S * 3, "the simulator to finish")
        assert sim.returncode == 0, (tmp_path / "procs.log").read_text()[-3000:]
        procs.procs.remove(sim)  # done: the flows go on

        raw = procs.dump("telemetry.raw", tmp_path)
        replay_canon, replay_dlq = replay_canonicalize(procs, raw, assets_csv, tmp_path / "r-canon")
        want_canon = keyed(replay_canon, canonical_key)
        want_dlq = keyed(map(unprefixed, replay_dlq), dlq_key)
        raw_topic = settings.topic("telemetry.raw")

        def live_canonicalize():
            canon = dump_values(procs.dump("telemetry.canonical", tmp_path))
            dlq = [unprefixed(d) for d in dump_values(procs.dump("telemetry.dlq", tmp_path)) if d["source_topic"] == raw_topic]
            return canon, dlq

        state = {}

        def canonicalize_drained() -> bool:
            state["canon"], state["dlq"] = live_canonicalize()
            return len(state["canon"]) >= len(want_canon) and len(state["dlq"]) >= len(want_dlq)

        procs.wait_for(canonicalize_drained, 120, f"{len(want_canon)} canonical readings and {len(want_dlq)} dead letters live")
        problems = diff_keyed(keyed(state["canon"], canonical_key), want_canon, "canonical")
        problems += diff_keyed(keyed(state["dlq"], dlq_key), want_dlq, "dead letter")
        assert len(state["canon"]) == len(want_canon) and len(state["dlq"]) == len(want_dlq), "copies live, no kill"
        assert not problems, "\n".join(problems)

        canon_dump = tmp_path / "telemetry.canonical.dump.jsonl"
        procs.run("replay", "aggregate", "--input", str(canon_dump), "--assets", str(assets_csv), "--out",
                  str(tmp_path / "r-agg"))
        want_agg = keyed(read_jsonl(tmp_path / "r-agg" / "fleet.aggregates.jsonl"), lambda r: tuple(r[k] for k in AGG_KEY))
        # live closes the last windows on the wall clock: wait until it has closed the window of the last raw message
        input_end = max(r[1] for r in want_canon)  # the replay's last window holds it
        device_paths = {a["device_id"]: a["region_path"] for a in assets}

        def aggregates_closed() -> bool:
            state["agg"] = dump_values(procs.dump("fleet.aggregates", tmp_path))
            live = keyed(state["agg"], lambda r: tuple(r[k] for k in AGG_KEY))
            return live_span(live)[1] > input_end and not missing_live(live, want_agg, device_paths)

        try:
            procs.wait_for(aggregates_closed, 120, "the live aggregate to close every window of the replay up to the last reading")
        except AssertionError as timed_out:
            live = keyed(state["agg"], lambda r: tuple(r[k] for k in AGG_KEY))
            missing = missing_live(live, want_agg, device_paths)
            raise AssertionError(f"{timed_out}: live closed windows {live_span(live)}, the last reading is in the window "
                                 f"starting {input_end}; {len(missing)} replay windows missing live, first {missing[:10]}; "
                                 f"log:\n{procs.log_tail()}") from None

        commands = procs.dump("dispatch.commands", tmp_path)
        procs.run("replay", "dispatch", "--input", str(merge_by_timestamp([canon_dump, commands], tmp_path / "mixed.jsonl")),
                  "--assets", str(assets_csv), "--out", str(tmp_path / "r-dispatch"))
        live_status = [s for s in dump_values(procs.dump("dispatch.status", tmp_path)) if s["command_id"] == "replay-vs-live"]
        live_setpoints = [s for s in dump_values(procs.dump("device.commands", tmp_path)) if s["command_id"] == "replay-vs-live"]

    live_agg = keyed(state["agg"], lambda r: tuple(r[k] for k in AGG_KEY))
    agg_problems, agg_counts = compare_aggregates(live_agg, want_agg, device_paths)
    print(f"canonical {len(want_canon)}, dead letters {len(want_dlq)}, aggregates {agg_counts}")
    assert not agg_problems, "\n".join(agg_problems)

    replay_status = [s for s in read_jsonl(tmp_path / "r-dispatch" / "dispatch.status.jsonl") if s["command_id"] == "replay-vs-live"]
    replay_setpoints = [s for s in read_jsonl(tmp_path / "r-dispatch" / "device.commands.jsonl")
                        if s["command_id"] == "replay-vs-live"]
    print("dispatch live:", [(s["state"], s["allocated_w"], s["devices"]) for s in live_status])
    print("dispatch replay:", [(s["state"], s["allocated_w"], s["devices"]) for s in replay_status])
    assert live_status and replay_status
    first = ("state", "requested_w", "node_path")
    assert {k: live_status[0][k] for k in first} == {k: replay_status[0][k] for k in first} and live_status[0]["state"] == "accepted"
    assert {s["device_id"] for s in live_setpoints} == {s["device_id"] for s in replay_setpoints}
    live_first, replay_first = first_allocation(live_setpoints), first_allocation(replay_setpoints)
    assert set(live_first) == set(replay_first)
    assert sum(live_first.values()) == pytest.approx(sum(replay_first.values()), abs=1.0)
    assert sum(live_first.values()) == pytest.approx(live_status[0]["allocated_w"], abs=1.0)
