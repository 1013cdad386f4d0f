"""The dispatch state machine (spec fleet.md section 2): lifecycle, supersession, re-allocation, time."""

from __future__ import annotations

import pytest

from flows.dispatch.state import PEAK_SHAVING_PROGRAM, DeviceReading, DispatchState, Emitted

T0 = 1_800_000_000_000
HOUR = 3_600_000


def reading(i: int, ts: int, *, path: str | None = None, soc: float = 60.0, enrolled: bool = True,
            programs: tuple | None = None, dispatchable: bool = True) -> DeviceReading:
    if programs is None:
        programs = (("market", 0.0), ("peak_shaving", 0.0)) if enrolled else (("market", 0.0),)
    return DeviceReading(f"d{i}", path or f"us/{'ca' if i % 2 else 'tx'}/site-{i}", ts, soc, 10000.0, 10.0, 5000.0, 5000.0,
                         programs, dispatchable)


def command(cid: str, node: str, target_w: float, start: int = T0, end: int = T0 + HOUR, **extra) -> dict:
    return {"command_id": cid, "node_path": node, "target_w": target_w, "start": start, "end": end,
            "issued_by": "test", **extra}


def tick(state: DispatchState, ts: int, devices=range(6), out: Emitted | None = None, **kw) -> Emitted:
    out = Emitted() if out is None else out
    state.on_readings([reading(i, ts + i, **kw) for i in devices], out)
    return out


def running(devices=range(6)) -> DispatchState:
    state = DispatchState(window_ms=10_000, staleness_ms=60_000)
    tick(state, T0, devices)
    return state


def live_setpoints(emitted: list[Emitted]) -> dict[str, tuple[str, float]]:
    """What each device follows after these emissions (a release removes it)."""
    now: dict[str, tuple[str, float]] = {}
    for out in emitted:
        for sp in out.setpoints:
            if sp["setpoint_w"] == 0:
                now.pop(sp["device_id"], None)
            else:
                now[sp["device_id"]] = (sp["command_id"], sp["setpoint_w"])
    return now


def states(out: Emitted) -> list[tuple[str, str]]:
    return [(s["command_id"], s["state"]) for s in out.statuses]


def test_accepted_and_split_over_the_node():
    state, out = running(), Emitted()
    state.on_command(command("c1", "us/ca", 6000), True, out)
    assert states(out) == [("c1", "accepted")]
    sp = live_setpoints([out])
    assert set(sp) == {"d1", "d3", "d5"} and sum(w for _, w in sp.values()) == pytest.approx(6000)
    assert out.commands[0]["command_id"] == "c1"


@pytest.mark.parametrize("record, known, reason", [
    (command("bad", "us/ca", 1000, start=T0, end=T0), True, "not after start"),
    (command("late", "us/ca", 1000, start=T0 - 2 * HOUR, end=T0 - HOUR), True, "already past"),
    (command("nowhere", "us/zz", 1000), False, "unknown node"),
])
def test_rejected_with_a_reason(record, known, reason):
    state, out = running(), Emitted()
    state.on_command(record, known, out)
    assert states(out) == [(record["command_id"], "rejected")] and reason in out.statuses[0]["reason"]
    assert not out.setpoints


def test_resent_command_id_is_the_same_command():
    state, out = running(), Emitted()
    state.on_command(command("c1", "us", 1000), True, out)
    again = Emitted()
    state.on_command(command("c1", "us", 9999), True, again)
    assert not again


def test_newer_command_for_same_node_or_ancestor_supersedes():
    state, first = running(), Emitted()
    state.on_command(command("c1", "us/ca", 3000), True, first)
    out = Emitted()
    state.on_command(command("c2", "us", -6000), True, out)
    assert ("c1", "superseded") in states(out) and ("c2", "accepted") in states(out)
    sp = live_setpoints([first, out])
    assert {c for c, _ in sp.values()} == {"c2"} and len(sp) == 6
    assert sum(w for _, w in sp.values()) == pytest.approx(-6000)


def test_command_for_a_subnode_takes_only_its_devices_and_gives_them_back_at_its_end():
    state, first = running(), Emitted()
    state.on_command(command("c1", "us", 6000), True, first)
    sub = Emitted()
    state.on_command(command("c2", "us/ca/site-1", -1000, end=T0 + 60_000), True, sub)
    assert states(sub) == [("c2", "accepted"), ("c1", "reallocated")]
    sp = live_setpoints([first, sub])
    assert sp["d1"] == ("c2", -1000.0)
    assert sum(w for d, (c, w) in sp.items() if c == "c1") == pytest.approx(6000)
    later = Emitted()
    for k in range(1, 15):
        tick(state, T0 + k * 5000, out=later)
    assert ("c2", "expired") in states(later) and ("c1", "reallocated") in states(later)
    assert live_setpoints([first, sub, later])["d1"][0] == "c1"


def test_stale_device_share_moves_to_the_others_within_a_window():
    state, first = running(), Emitted()
    state.on_command(command("c1", "us", 6000), True, first)
    out = Emitted()
    t = T0
    while t < T0 + 60_000 + 10_000:  # d0 falls silent; the others report every 5 s
        t += 5000
        tick(state, t, devices=range(1, 6), out=out)
    realloc = [s for s in out.statuses if s["state"] == "reallocated"]
    assert realloc and realloc[0]["at"] <= T0 + 60_000 + 10_000 + 5000
    sp = live_setpoints([first, out])
    assert "d0" not in sp and sum(w for _, w in sp.values()) == pytest.approx(6000)


def test_joining_device_is_used_from_the_next_reallocation():
    state, first = running(devices=range(5)), Emitted()
    state.on_command(command("c1", "us", 5000), True, first)
    out = Emitted()
    for k in range(1, 5):
        tick(state, T0 + k * 5000, out=out)  # d5 now reports too
    assert "d5" in live_setpoints([first, out])


def test_expiry_releases_every_device_at_end():
    state, first = running(), Emitted()
    state.on_command(command("c1", "us", 6000, end=T0 + 20_000), True, first)
    out = Emitted()
    for k in range(1, 6):
        tick(state, T0 + k * 5000, out=out)
    assert ("c1", "expired") in states(out)
    releases = [sp for sp in out.setpoints if sp["setpoint_w"] == 0]
    assert len(releases) == 6 and all(sp["start"] == sp["end"] == T0 + 20_000 for sp in releases)
    assert live_setpoints([first, out]) == {}


def test_pending_command_starts_at_its_start_in_event_time():
    state, out = running(), Emitted()
    state.on_command(command("c1", "us", 6000, start=T0 + 30_000), True, out)
    assert not out.statuses
    for k in range(1, 8):
        tick(state, T0 + k * 5000, out=out)
    accepted = [s for s in out.statuses if s["state"] == "accepted"]
    assert accepted and accepted[0]["at"] == T0 + 30_000 + 0  # the reading that crossed the start (d0 at +30 s)


def test_peak_shaving_program_uses_only_enrolled_devices():
    state = DispatchState()
    out = Emitted()
    state.on_readings([reading(i, T0, enrolled=i < 3) for i in range(6)], out)
    state.on_command(command("ps", "us", 3000, program=PEAK_SHAVING_PROGRAM), True, out)
    assert set(live_setpoints([out])) == {"d0", "d1", "d2"}


def test_a_skewed_device_clock_does_not_make_the_fleet_stale():
    state, first = running(), Emitted()
    state.on_command(command("c1", "us", 6000), True, first)
    out = Emitted()
    state.on_readings([reading(9, T0 + 290_000, path="us/ca/site-9")], out)  # 290 s ahead: accepted by canonicalize
    tick(state, T0 + 5000, out=out)
    assert state.clock_ms < T0 + 60_000 and not [s for s in out.statuses if s["state"] == "reallocated"]


def test_same_readings_in_other_batches_give_the_same_output():
    def run(batch: int) -> list:
        state, out = running(), Emitted()
        state.on_command(command("c1", "us", 6000, end=T0 + 200_000), True, out)
        stream = [reading(i, T0 + k * 5000 + i) for k in range(1, 60) for i in range(6) if not (i == 2 and k > 10)]
        for j in range(0, len(stream), batch):
            state.on_readings(stream[j:j + batch], out)
        return [out.setpoints, out.statuses]

    assert run(1) == run(7) == run(1000)


def test_snapshot_restores_the_same_behaviour():
    state, out = running(), Emitted()
    state.on_command(command("c1", "us", 6000, end=T0 + 200_000), True, out)
    restored = DispatchState.loads(state.dumps())
    a, b = Emitted(), Emitted()
    for k in range(1, 50):
        tick(state, T0 + k * 5000, devices=range(4), out=a)
        tick(restored, T0 + k * 5000, devices=range(4), out=b)
    assert (a.setpoints, a.statuses) == (b.setpoints, b.statuses) and a.statuses


def test_with_a_wall_clock_commands_expire_without_new_input():
    from flows.dispatch.flow import DispatchLogic

    wall = [1000.0]
    logic = DispatchLogic(None, window_ms=10_000, staleness_ms=60_000, wall_clock=lambda: wall[0])
    logic.on_batch([[("readings", [reading(i, T0) for i in range(3)])],
                    [("command", (command("c1", "us", 3000, end=T0 + 30_000), True, None))]])
    deadline = logic.notify_at()
    assert deadline is not None and deadline.timestamp() == pytest.approx(1000.0 + 10.0, abs=0.01)  # the next window check
    wall[0] += 31.0  # no input for 31 s of wall time
    emitted, _ = logic.on_notify()
    assert ("c1", "expired") in [(s["command_id"], s["state"]) for e in emitted for s in e.statuses]
    # and the snapshot carries the state, not the wall-clock anchor
    restored = DispatchLogic(logic.snapshot(), window_ms=10_000, staleness_ms=60_000, wall_clock=lambda: 5000.0)
    assert restored.state.clock_ms == logic.state.clock_ms and not restored.state.active


def test_an_unchanged_setpoint_is_sent_again_with_its_first_start_once_it_is_old():
    """A gateway that restarted or missed a message gets its set point again (level, not edge)."""
    state, out = running(), Emitted()
    state.resend_ms = 30_000
    state.on_command(command("c1", "us/ca", 6000), True, out)
    first = {sp["device_id"]: sp for sp in out.setpoints}
    assert set(first) == {"d1", "d3", "d5"}
    resent: list[dict] = []
    for k in range(1, 8):  # 70 s of readings, powers unchanged
        resent += tick(state, T0 + k * 10_000).setpoints
    assert {sp["device_id"] for sp in resent} == set(first)
    assert all(sp == first[sp["device_id"]] for sp in resent), "the same record: same start, watts and end"
    assert len(resent) == 2 * len(first), "sent again at +30 s and +60 s, not every window"


def test_without_resend_only_changes_are_sent():
    state, out = running(), Emitted()
    state.on_command(command("c1", "us/ca", 6000), True, out)
    assert [sp for k in range(1, 8) for sp in tick(state, T0 + k * 10_000).setpoints] == []


def test_a_command_issued_after_the_last_reading_is_taken_at_its_own_time():
    # live: a command at T with readings until T - 5 s starts at once; a replay of the same input must too
    state = running()
    out = Emitted()
    issued = T0 + 5_000
    state.on_command(command("c1", "us/ca", 6000, start=issued), True, out, issued_ms=issued)
    assert states(out) == [("c1", "accepted")] and state.clock_ms == issued
    assert sum(w for _, w in live_setpoints([out]).values()) == pytest.approx(6000)


def test_at_the_end_of_a_replay_every_command_that_never_started_says_so():
    state, out = running(), Emitted()
    state.on_command(command("later", "us", 1000, start=T0 + HOUR, end=T0 + 2 * HOUR), True, out, issued_ms=T0)
    assert states(out) == []  # waiting for its start
    end = Emitted()
    state.end_of_input(end)
    assert states(end) == [("later", "expired")] and "never started" in end.statuses[0]["reason"]
    assert not state.pending
