"""Flow ``store-telemetry``: ``telemetry.canonical`` -> the time-series store.

Its own flow so that storage deploys and scales apart from canonicalization.
Idempotent: a reading written twice is the same point (see sinks/timeseries.py).
"""

from __future__ import annotations


import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.decode import read_decoded
from sinks.ports import KafkaPorts, Ports
from sinks.timeseries import TimeseriesSink, telemetry_lines

__all__ = ["build_flow"]


def build_flow(settings, *, ports: Ports | None = None, sink=None) -> Dataflow:
    ports = ports or KafkaPorts(settings)
    flow = Dataflow("store_telemetry")
    readings, dead = read_decoded(ports, flow, "canonical_in", ["telemetry.canonical"])
    op.output("timeseries_out", readings, sink or TimeseriesSink(settings, telemetry_lines))
    ports.write("dlq_out", dead)
    return flow


__getattr__ = flow_from_environment(build_flow)
