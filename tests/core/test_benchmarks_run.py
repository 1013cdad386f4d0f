"""Every benchmark still runs (on a tiny input): a refactor must not leave a benchmark behind broken.

The figures are not checked here; targets live in the benchmarks and bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SMALL_RUNS = [
    ("canonicalize", ["--devices", "20", "--duration-s", "60", "--rounds", "1"], "ratio flow / baseline"),
    ("aggregate", ["--devices", "300", "--windows", "2", "--live-windows", "0", "--rounds", "2"], "flow, 2 processes"),
    ("dispatch", ["--devices", "2000", "--repeat", "1"], "end to end"),
    ("alerts", ["--devices", "200", "--duration-s", "60", "--rounds", "1"], "end to end"),
]


def bench_output(name: str, *args: str) -> str:
    """What ``bench/NAME.py ARGS`` printed; fails with its error output when it fails."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("name,args,expect", SMALL_RUNS, ids=[r[0] for r in SMALL_RUNS])
def test_benchmark_runs_on_a_small_input(name, args, expect):
    out = bench_output(name, *args)
    assert expect in out, out[-3000:]


def test_the_gateway_benchmark_runs_on_a_small_fleet(stack):
    out = bench_output("gateway", "--devices", "20", "--seconds", "2", "--state-dir", str(stack.state_dir))
    for expect in ("KiB per connection", "ratio", "p50", "connected again"):
        assert expect in out, out[-3000:]


def test_the_asset_registry_benchmark_runs_on_a_small_registry(stack):
    out = bench_output("assets", "--devices", "2000", "--changes", "50", "--state-dir", str(stack.state_dir))
    for expect in ("ratio cache / baseline", "memory per device", "devices moved", "devices decommissioned"):
        assert expect in out, out[-3000:]
