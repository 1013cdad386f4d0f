"""``vpp replay alerts``: the alerts flow over a dump of its inputs (``telemetry.canonical``, ``fleet.aggregates``,
``telemetry.dlq``, ``dispatch.status``, ``fleet.events``, any of them, mixed in one dump).

The flow reads them through one input, so they keep the dump's order (a dump merged by Kafka timestamp has the
order they reached the live flow in). Time is event time only (no wall clock: no reader or partition is ever
idle, and a dead letter counts at its Kafka timestamp, kept in the dump), so the same dump gives the same
alerts. Writes ``DIR/fleet.alerts.jsonl``, ``DIR/fleet.events.jsonl`` (and ``telemetry.dlq.jsonl``). The
assets file is not read: no rule needs the registry.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_replay"]


def run_replay(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from bytewax.testing import run_main

    from flows.alerts.flow import OUTPUT_TOPICS, build_flow
    from sinks.ports import RecordDumpPorts

    run_main(build_flow(settings, ports=RecordDumpPorts(dump, out, OUTPUT_TOPICS), wall_clock=None))
