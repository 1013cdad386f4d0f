"""What `vpp demo` starts beside the flows: the market simulator, the operators' console, the device gateway, and
the environment the flows run in (their own PostgreSQL role)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable

from vpp.errors import UserError

__all__ = ["start_market", "start_console", "flow_role_env", "start_gateway"]


def start_market(procs, argv: list[str], logs: Path) -> str:
    """Start the market simulator; its first stdout line is JSON with its URL."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(logs / "market.log", "ab"),
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    procs.procs["market"] = proc
    line = proc.stdout.readline()
    try:
        return json.loads(line)["url"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"the market simulator did not start (see {logs / 'market.log'}): {line!r}") from exc


def start_console(procs, argv: list[str], logs: Path, settings, console,
                   env: dict[str, str] | None = None) -> None:
    """The operators' console beside the flows; its URL and the demo login (the password stays in a file)."""
    try:
        from cli.serve import ensure_demo_user, wait_for_api
    except ModuleNotFoundError:
        return
    password_file = ensure_demo_user(settings)
    procs.start("console", argv, logs / "console.log", env=env)  # env: the demo market's URL
    url = wait_for_api(settings.state_dir, procs.procs["console"].pid)
    if url is None:
        console.print(f"the console did not start: see {logs / 'console.log'}")
        return
    console.print(f"[bold]console[/]: {url}/  log in as [bold]demo[/], password in {password_file}")


def flow_role_env(state_dir: Path, settings) -> dict[str, str]:
    """The flows run as the PostgreSQL role flows get in production (vpp_flow: rows, no DDL), when the demo uses
    the local stack's database; the DSN names the stack's password file and holds no secret."""
    import json

    try:
        state = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    flow_dsn = state.get("postgres_flow")
    return {"VPP_POSTGRES_DSN": flow_dsn} if flow_dsn and settings.postgres_dsn == state.get("postgres") else {}


def start_gateway(procs, vpp: list[str], common: list[str], logs: Path, state_dir: Path, settings, args,
                   log: Callable[[str], None]) -> tuple[str, Path]:
    """Register the fleet, give every device a certificate and start ``vpp gateway``: its URL and the certificates."""
    from devtools.simulator.kafka_io import register_fleet
    from devtools.simulator.tree import build_fleet

    register_fleet(settings.postgres_dsn, build_fleet(args.devices, 5, 4, args.seed))  # vpp simulate's default shape
    certs = state_dir / "device-certs"
    for step in (["pki", "init"], ["pki", "issue", "--all", "--out", str(certs)]):
        subprocess.run(vpp + step + common, check=True, capture_output=True, timeout=300)
    procs.start("gateway", vpp + ["gateway"] + common, logs / "gateway.log")
    state, deadline = state_dir / "gateway.json", time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            found = json.loads(state.read_text())
            if found.get("pid") == procs.procs["gateway"].pid:
                log(f"device gateway at {found['url']}; every device connects with its own certificate ({certs})")
                return found["url"], certs
        except (OSError, ValueError):
            pass
        if procs.procs["gateway"].poll() is not None:
            break
        time.sleep(0.2)
    raise UserError(f"the device gateway did not start (see {logs / 'gateway.log'})")
