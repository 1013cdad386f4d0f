"""bench/console.py still runs (a small fleet, a few requests) on the real stack; its figures are not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_console_benchmark_runs_on_a_small_fleet(stack):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "console.py"), "--devices", "500", "--requests", "5",
                           "--sse-clients", "3", "--state-dir", str(stack.state_dir)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratio api / baseline" in done.stdout and "3/3 clients got the change" in done.stdout, done.stdout
