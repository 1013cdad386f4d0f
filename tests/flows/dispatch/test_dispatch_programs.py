"""Dispatch follows the registry's programs and lifecycle (issue #22): who takes part in a program's command, the
reserve a program holds, suspended devices, and a decommissioned device leaving every pool at once."""

from __future__ import annotations

import pytest

from flows.dispatch.state import DispatchState, Emitted
from test_dispatch_state import T0, command, live_setpoints, reading

PS = (("market", 0.0), ("peak_shaving", 0.0))
MARKET = (("market", 0.0),)


@pytest.mark.parametrize("program, expected", [
    ("peak_shaving", {"d0", "d1"}),
    ("market", {"d0", "d1", "d2", "d3"}),
    ("no_such_program", set()),
    (None, {"d0", "d1", "d2", "d3"}),  # an operator's command: every active device
])
def test_a_programs_command_uses_the_devices_enrolled_in_it(program, expected):
    state, out = DispatchState(), Emitted()
    state.on_readings([reading(i, T0, programs=PS if i < 2 else MARKET) for i in range(4)], out)
    state.on_command(command("c", "us", 2000, program=program), True, out)
    assert set(live_setpoints([out])) == expected


def test_suspended_and_commissioning_devices_are_measured_but_never_dispatched():
    state, out = DispatchState(), Emitted()
    state.on_readings([reading(i, T0, dispatchable=i != 1) for i in range(3)], out)
    state.on_command(command("c", "us", 3000), True, out)
    assert set(live_setpoints([out])) == {"d0", "d2"}


def test_a_program_holds_its_reserve_back_from_its_commands():
    # 10 kWh at 60 %: above the device's own 10 % reserve 5 kWh; above the program's 50 % only 1 kWh
    state, out = DispatchState(), Emitted()
    state.on_readings([reading(0, T0, programs=(("peak_shaving", 50.0),))], out)
    state.on_command(command("c", "us", 5000, end=T0 + 3_600_000, program="peak_shaving"), True, out)
    (_, w), = live_setpoints([out]).values()
    assert w == pytest.approx(1000.0, abs=1.0)  # 1 kWh over the hour, not the 5 kW its rating allows


def test_a_decommissioned_device_leaves_the_pool_at_once_and_its_share_moves():
    state, first = DispatchState(), Emitted()
    state.on_readings([reading(i, T0) for i in range(3)], first)
    state.on_command(command("c", "us", 3000), True, first)
    assert set(live_setpoints([first])) == {"d0", "d1", "d2"}
    out = Emitted()
    state.on_removed(["d1"], out)  # no new reading, no window boundary: at once
    now = live_setpoints([first, out])
    assert set(now) == {"d0", "d2"} and sum(w for _, w in now.values()) == pytest.approx(3000.0, abs=1.0)
    assert [s["state"] for s in out.statuses] == ["reallocated"]
    again = Emitted()
    state.on_removed(["d1"], again)  # told twice (two workers): nothing more
    assert not again
