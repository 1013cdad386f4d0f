"""A deterministic simulated fleet of home batteries: the platform's data source for tests and demos.

- ``tree``: the fleet (region tree, devices, hardware), ``build_fleet``;
- ``physics``: solar, load and battery, with exact energy conservation;
- ``dialects``: the three raw gateway dialects of spec/telemetry.md;
- ``faults``: what goes wrong, at configurable rates;
- ``stream``: ``Simulation``, the generator driven by event time;
- ``dump``: kcat -J dumps without a broker;
- ``kafka_io``: publishing to ``telemetry.raw`` and obeying ``device.commands``;
- ``cli``: ``vpp simulate``.
"""

from devtools.simulator.dump import partition_for, simulate_to_dump, write_dump
from devtools.simulator.faults import NO_FAULTS, FaultConfig
from devtools.simulator.stream import Emission, Record, SetPoint, Simulation, SimulationConfig
from devtools.simulator.tree import DIALECTS, Device, Fleet, build_fleet

__all__ = [
    "DIALECTS",
    "Device",
    "Emission",
    "FaultConfig",
    "Fleet",
    "NO_FAULTS",
    "Record",
    "SetPoint",
    "Simulation",
    "SimulationConfig",
    "build_fleet",
    "partition_for",
    "simulate_to_dump",
    "write_dump",
]


def run_publisher(*args, **kwargs):
    """See ``devtools.simulator.kafka_io.run_publisher`` (imported lazily: it pulls in confluent-kafka)."""
    from devtools.simulator.kafka_io import run_publisher as _run

    return _run(*args, **kwargs)
