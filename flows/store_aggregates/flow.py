"""Flow ``store-aggregates``: ``fleet.aggregates`` -> the time-series store + PostgreSQL ``node_state``.

Time series: one series per node (``sinks.timeseries.aggregate_lines``),
stamped at the window start, so a record written twice is the same point.
``node_state``: the latest window per node, upserted only by a window as new
or newer (``sinks.node_state``). Both are idempotent, so the at-least-once
delivery of the aggregate flow leaves them as an uninterrupted run would.
A message that cannot be decoded goes to ``telemetry.dlq``.
"""

from __future__ import annotations


import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.decode import read_decoded
from sinks.node_state import NodeStateSink
from sinks.ports import KafkaPorts, Ports
from sinks.timeseries import TimeseriesSink, aggregate_lines

__all__ = ["build_flow"]


def build_flow(settings, *, ports: Ports | None = None, timeseries_sink=None, node_state_sink=None) -> Dataflow:
    ports = ports or KafkaPorts(settings)
    flow = Dataflow("store_aggregates")
    aggregates, dead = read_decoded(ports, flow, "aggregates_in", ["fleet.aggregates"])
    op.output("timeseries_out", aggregates, timeseries_sink or TimeseriesSink(settings, aggregate_lines))
    op.output("node_state_out", aggregates, node_state_sink or NodeStateSink(settings.postgres_dsn))
    ports.write("dlq_out", dead)
    return flow


__getattr__ = flow_from_environment(build_flow)
