"""``vpp replay canonicalize``: the canonicalize flow over a raw dump, enriched from an assets CSV, no services."""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_replay"]


def run_replay(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from bytewax.testing import run_main

    from flows._common.registries import static_assets
    from flows.canonicalize.flow import OUTPUT_TOPICS, build_flow
    from sinks.ports import ReplayPorts

    run_main(build_flow(settings, ports=ReplayPorts(dump, out, OUTPUT_TOPICS), assets=static_assets(assets_csv)))
