"""``vpp replay dispatch``: the dispatch flow over a dump of ``telemetry.canonical`` and ``dispatch.commands``.

The dump mixes both topics (kcat ``-J`` lines, payload = the JSON form of the Avro record); the
flow reads them through one input so commands and readings keep the dump's order. Time is the
messages' event time only, so the same dump gives the same set points. Writes
``DIR/device.commands.jsonl``, ``DIR/dispatch.status.jsonl`` (and ``telemetry.dlq.jsonl``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_replay"]


def run_replay(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from bytewax.testing import run_main

    from flows._common.registries import static_assets
    from flows.dispatch.flow import OUTPUT_TOPICS, build_flow
    from sinks.ports import RecordDumpPorts

    ports = RecordDumpPorts(dump, out, OUTPUT_TOPICS)
    run_main(build_flow(settings, ports=ports, assets=static_assets(assets_csv), store=None, wall_clock=None))
