"""The battery, solar and load model: invariants that hold for any input."""

import math

from hypothesis import assume, given
from hypothesis import strategies as st

import pytest

from devtools.simulator.physics import BatterySpec, LoadSurge, load_shape_w, solar_clear_sky_fraction, solar_w, step_battery

specs = st.builds(
    BatterySpec,
    capacity_wh=st.floats(500, 40_000),
    max_charge_w=st.floats(0, 12_000),
    max_discharge_w=st.floats(0, 12_000),
    reserve_pct=st.floats(0, 50),
)
socs = st.floats(0, 100)
powers = st.floats(0, 15_000)
dts = st.floats(0.1, 900)
setpoints = st.one_of(st.none(), st.just(0.0), st.floats(-20_000, 20_000))


@given(specs, socs, powers, powers, dts, setpoints)
def test_energy_is_exactly_conserved(spec, soc, solar, load, dt, setpoint):
    step = step_battery(spec, soc, solar, load, dt, setpoint)
    expected = soc - step.battery_w * dt / 3600 / spec.capacity_wh * 100
    assert math.isclose(step.soc_pct, expected, abs_tol=1e-9)


@given(specs, socs, powers, powers, dts, setpoints)
def test_soc_stays_in_0_100_and_power_within_limits(spec, soc, solar, load, dt, setpoint):
    step = step_battery(spec, soc, solar, load, dt, setpoint)
    assert 0.0 <= step.soc_pct <= 100.0
    assert -spec.max_charge_w - 1e-9 <= step.battery_w <= spec.max_discharge_w + 1e-9


@given(specs, socs, powers, powers, dts, setpoints)
def test_grid_balances_the_home(spec, soc, solar, load, dt, setpoint):
    step = step_battery(spec, soc, solar, load, dt, setpoint)
    assert math.isclose(step.grid_w, load - solar - step.battery_w, abs_tol=1e-6)


@given(specs, socs, powers, powers, dts)
def test_self_consumption_uses_only_solar_surplus_and_covers_only_the_deficit(spec, soc, solar, load, dt):
    step = step_battery(spec, soc, solar, load, dt, None)
    if step.battery_w < 0:  # charging: never from the grid
        assert -step.battery_w <= solar - load + 1e-9
        assert step.grid_w <= 1e-9
    if step.battery_w > 0:  # discharging: never exports
        assert step.battery_w <= load - solar + 1e-9
        assert step.grid_w >= -1e-9


@given(specs, socs, powers, powers, dts)
def test_self_consumption_never_goes_below_the_reserve(spec, soc, solar, load, dt):
    step = step_battery(spec, soc, solar, load, dt, None)
    if soc >= spec.reserve_pct:
        assert step.soc_pct >= spec.reserve_pct - 1e-9
    else:  # below the reserve (after a dispatch) it only charges
        assert step.battery_w <= 0


@given(specs, socs, powers, powers, dts, st.floats(0, 100))
def test_self_consumption_keeps_what_a_program_holds(spec, soc, solar, load, dt, hold):
    step = step_battery(spec, soc, solar, load, dt, None, hold)
    floor = max(spec.reserve_pct, hold)
    if soc >= floor:
        assert step.soc_pct >= floor - 1e-9
    else:
        assert step.battery_w <= 0
    if hold == 100:  # holds everything: never discharges by itself
        assert step.battery_w <= 0


@given(specs, socs, powers, powers, dts, st.floats(-20_000, 20_000).filter(lambda w: w != 0), st.floats(0, 100))
def test_set_points_may_use_what_a_program_holds(spec, soc, solar, load, dt, setpoint, hold):
    assert step_battery(spec, soc, solar, load, dt, setpoint, hold) == step_battery(spec, soc, solar, load, dt, setpoint)


@given(specs, socs, powers, powers, dts)
def test_a_release_is_no_command(spec, soc, solar, load, dt):
    assert step_battery(spec, soc, solar, load, dt, 0.0) == step_battery(spec, soc, solar, load, dt, None)


@given(specs, socs, powers, powers, dts, st.floats(-20_000, 20_000).filter(lambda w: w != 0))
def test_a_set_point_is_followed_up_to_the_binding_limit(spec, soc, solar, load, dt, setpoint):
    step = step_battery(spec, soc, solar, load, dt, setpoint)
    assert step.following_setpoint
    if setpoint > 0:
        energy_limit_w = soc / 100 * spec.capacity_wh * 3600 / dt  # may use the reserve, down to 0 %
        assert math.isclose(step.battery_w, min(setpoint, spec.max_discharge_w, energy_limit_w), rel_tol=1e-9, abs_tol=1e-9)
    else:
        headroom_limit_w = (100 - soc) / 100 * spec.capacity_wh * 3600 / dt
        assert math.isclose(-step.battery_w, min(-setpoint, spec.max_charge_w, headroom_limit_w), rel_tol=1e-9, abs_tol=1e-9)


# set points of at least a milliwatt: below that the feasibility arithmetic here underflows (5e-324 W
# at 0 % SoC looked feasible), and no gateway resolves such powers. Drawn feasible (a share of the
# binding limit, computed as step_battery does) rather than filtered: most random set points are not.
@given(specs, socs, powers, powers, st.floats(0, 1), st.booleans())
def test_a_feasible_set_point_is_met_exactly(spec, soc, solar, load, share, discharge):
    dt = 5.0
    if discharge:
        limit_w = min(spec.max_discharge_w, max(0.0, soc - 0.0) / 100.0 * spec.capacity_wh * 3600.0 / dt)
    else:
        limit_w = min(spec.max_charge_w, max(0.0, 100.0 - soc) / 100.0 * spec.capacity_wh * 3600.0 / dt)
    setpoint = share * limit_w if discharge else -(share * limit_w)
    assume(abs(setpoint) >= 1e-3)
    assert step_battery(spec, soc, solar, load, dt, setpoint).battery_w == setpoint


@given(st.floats(0, 24), st.integers(1, 365), st.booleans())
def test_solar_is_a_fraction_of_peak_and_dark_at_night(hour, day, dst):
    fraction = solar_clear_sky_fraction(hour, day, dst)
    assert 0.0 <= fraction <= 1.0
    if hour < 4.5 or hour > 22.5:
        assert fraction == 0.0


def test_solar_peaks_around_noon_and_clouds_reduce_it():
    assert solar_w(5000, 13.0, 172, cloud=0.0) > solar_w(5000, 9.0, 172, cloud=0.0) > 0
    assert solar_w(5000, 13.0, 172, cloud=1.0) < solar_w(5000, 13.0, 172, cloud=0.0)
    assert solar_w(5000, 13.0, 172, cloud=0.0) <= 5000


def test_load_peaks_in_the_evening():
    night, noon, evening = (load_shape_w(400, 2000, h) for h in (3.0, 12.0, 19.0))
    assert evening > noon > night >= 400 * 0.99
    assert load_shape_w(400, 2000, 19.0, noise=1.2) > evening


T0 = 1_800_000_000_000


@pytest.mark.parametrize(("offset_s", "extra_w"), [
    (-1, 0.0), (0, 0.0), (150, 750.0), (300, 1500.0), (1000, 1500.0), (1500, 1500.0), (1650, 750.0), (1800, 0.0), (5000, 0.0),
])
def test_a_load_surge_rises_holds_and_falls(offset_s, extra_w):
    surge = LoadSurge(T0, 1500.0, ramp_s=300, hold_s=1200)
    assert surge.extra_at(T0 + offset_s * 1000) == pytest.approx(extra_w)
    assert surge.end_ms == T0 + 1_800_000


def test_a_surge_needs_non_negative_sizes():
    with pytest.raises(ValueError, match="must be >= 0"):
        LoadSurge(T0, -1.0)
