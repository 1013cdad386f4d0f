"""`vpp demo --duration`: the whole platform comes up, readings flow, everything stops with a summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


@pytest.mark.timeout(240)
def test_demo_shows_readings_flowing_and_stops_everything(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vpp.cli", "demo", "--duration", "30", "--devices", "150",
                             "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout[result.stdout.rindex("summary"):]
    counts = {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"^\s+([a-z.]+)\s+([\d,]+)$", summary, re.M)}
    assert counts["telemetry.raw"] > 150
    assert counts["telemetry.canonical"] > 150
    status = subprocess.run([sys.executable, "-m", "vpp.cli", "status", "--json", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 1  # the demo stopped its services
    assert not any(s["healthy"] for s in json.loads(status.stdout)["services"].values())
