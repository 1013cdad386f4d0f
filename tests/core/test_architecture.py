"""The layout tells the architecture: layers import one way, flows are independent, modules stay small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "flows", "devtools", "sinks", "models", "vpp", "edge", "console")


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_each_flow_package_has_its_deploy_overlay():
    flows = {p.name.replace("_", "-") for p in (REPO / "flows").iterdir()
             if p.is_dir() and not p.name.startswith(("_", ".")) and (p / "flow.py").exists()}
    overlays = {p.name for p in (REPO / "deploy" / "overlays").iterdir() if (p / "flow-params.yaml").exists()}
    assert flows == overlays


def test_nothing_registers_itself_at_import_time():
    from cli.main import COMMAND_MODULES
    from cli.replay import REPLAYS

    assert len(COMMAND_MODULES) >= 13 and {"canonicalize", "aggregate", "pipeline", "dispatch", "alerts"} <= set(REPLAYS)
    for path in (REPO / "flows").rglob("*.py"):
        assert "register_replay" not in path.read_text(), path
