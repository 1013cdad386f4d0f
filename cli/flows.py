"""`vpp flows` and `vpp run FLOW`: run one dataflow in the foreground.

This is the container's entry point too (``ENTRYPOINT ["vpp", "run"]``).
Inside a Kubernetes StatefulSet the process id and the peer addresses come
from bytewax's own variables (``BYTEWAX_POD_NAME`` minus
``BYTEWAX_STATEFULSET_NAME-``, ``BYTEWAX_HOSTFILE_PATH`` or
``BYTEWAX_ADDRESSES``); on a laptop ``--processes P`` starts P local
processes on loopback ports.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from cli.common import command, load_settings, positive_int
from vpp.errors import UserError
from vpp.net import free_ports

__all__ = ["FLOWS", "add_commands", "run_flow", "build"]

#: name -> (module, what it does). The module offers ``build_flow(settings) -> Dataflow``.
FLOWS: dict[str, tuple[str, str]] = {
    "canonicalize": ("flows.canonicalize.flow", "telemetry.raw -> telemetry.canonical + telemetry.dlq"),
    "store-telemetry": ("flows.store_telemetry.flow", "telemetry.canonical -> time-series store"),
    "store-dlq": ("flows.store_dlq.flow", "telemetry.dlq -> PostgreSQL (vpp dlq list/show)"),
    "aggregate": ("flows.aggregate.flow", "telemetry.canonical -> fleet.aggregates (windowed, by region path)"),
    "store-aggregates": ("flows.store_aggregates.flow", "fleet.aggregates -> time-series store + latest node state"),
    "dispatch": ("flows.dispatch.flow", "dispatch.commands -> device.commands + dispatch.status"),
    "peak-shaving": ("flows.peak_shaving.flow", "fleet.aggregates -> dispatch.commands"),
    "autobidder": ("flows.autobidder.flow", "market + aggregates -> bids, awards -> dispatch.commands"),
    "forecast-worker": ("flows.forecast_worker.flow", "autobidder.forecast.requests -> autobidder.forecast.results"),
    "optimize-worker": ("flows.optimize_worker.flow", "autobidder.optimize.requests -> autobidder.optimize.results"),
    "alerts": ("flows.alerts.flow", "telemetry, aggregates, dead letters, dispatch status -> fleet.alerts + fleet.events"),
    "store-alerts": ("flows.store_alerts.flow", "fleet.alerts + fleet.events -> PostgreSQL + time-series store (+ webhook)"),
}

RECOVERY_PARTITIONS = 8  # fixed forever per recovery store: >= the most workers a flow will ever run with


def available_flows() -> dict[str, tuple[str, str]]:
    """Every flow of FLOWS (each is part of this package; a missing one is a broken installation, not an option)."""
    return dict(FLOWS)


def build(name: str, settings):
    if name not in FLOWS:
        raise UserError(f"unknown flow {name!r}; available: {', '.join(FLOWS)}")
    module = importlib.import_module(FLOWS[name][0])  # the table above, imported on demand: `vpp --help` stays fast
    return module.build_flow(settings)


def _ensure_recovery(directory: Path, partitions: int) -> None:
    if any(directory.glob("part-*.sqlite3")):
        return
    from bytewax.recovery import init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    init_db_dir(directory, partitions)


def recovery_directory(settings, name: str) -> Path | None:
    """``$BYTEWAX_RECOVERY_DIRECTORY`` as is (one volume per pod in Kubernetes), else ``<recovery_dir>/<flow>``."""
    if os.environ.get("BYTEWAX_RECOVERY_DIRECTORY"):
        return Path(os.environ["BYTEWAX_RECOVERY_DIRECTORY"])
    if settings.recovery_dir:
        return Path(settings.recovery_dir) / name
    return None


def run_flow(settings, name: str, *, workers: int = 1, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    """Run flow ``name`` in this process until its input ends (or forever, for Kafka inputs)."""
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from vpp.gc_policy import tune_for_streaming
    from vpp.observability import setup_observability

    setup_observability(f"vpp-{name}")
    flow = build(name, settings)
    tune_for_streaming()
    recovery = None
    epoch = timedelta(seconds=int(os.environ.get("BYTEWAX_SNAPSHOT_INTERVAL", settings.snapshot_interval_s)))
    directory = recovery_directory(settings, name)
    if directory is not None:
        _ensure_recovery(directory, RECOVERY_PARTITIONS)
        backup_s = int(os.environ.get("BYTEWAX_RECOVERY_BACKUP_INTERVAL", max(30, 2 * settings.snapshot_interval_s)))
        recovery = RecoveryConfig(str(directory), backup_interval=timedelta(seconds=backup_s))
    cli_main(flow, workers_per_process=workers, process_id=process_id, addresses=addresses,
             epoch_interval=epoch, recovery_config=recovery)


def _cluster_from_env() -> tuple[int | None, list[str] | None]:
    env = os.environ
    pid = env.get("BYTEWAX_PROCESS_ID")
    process_id = int(pid) if pid else None
    if process_id is None and "BYTEWAX_POD_NAME" in env and "BYTEWAX_STATEFULSET_NAME" in env:
        process_id = int(env["BYTEWAX_POD_NAME"].removeprefix(env["BYTEWAX_STATEFULSET_NAME"] + "-"))
    addresses = None
    if env.get("BYTEWAX_ADDRESSES"):
        addresses = env["BYTEWAX_ADDRESSES"].split(";")
    elif "BYTEWAX_HOSTFILE_PATH" in env:
        addresses = [line.strip() for line in Path(env["BYTEWAX_HOSTFILE_PATH"]).read_text().splitlines() if line.strip()]
    if process_id is not None and not addresses:
        raise UserError("BYTEWAX process id is set but no peer addresses: set BYTEWAX_ADDRESSES or BYTEWAX_HOSTFILE_PATH")
    return process_id, addresses


def _workers_from_env() -> int:
    text = os.environ.get("BYTEWAX_WORKERS_PER_PROCESS", "1")
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"BYTEWAX_WORKERS_PER_PROCESS: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.recovery_dir is not None:
        settings = settings.replace(recovery_dir=args.recovery_dir)
    workers = args.workers if args.workers is not None else _workers_from_env()
    if args.process_id is not None:
        run_flow(settings, args.flow, workers=workers, process_id=args.process_id, addresses=args.addresses.split(";"))
        return 0
    if args.processes > 1:
        addresses = [f"127.0.0.1:{p}" for p in free_ports(args.processes)]
        base = [sys.executable, "-m", "cli", "run", args.flow, "--workers", str(workers), "--addresses", ";".join(addresses)]
        if args.state_dir:
            base += ["--state-dir", args.state_dir]
        if args.config:
            base += ["--config", args.config]
        if args.recovery_dir is not None:
            base += ["--recovery-dir", args.recovery_dir]
        procs = [subprocess.Popen(base + ["--process-id", str(i)]) for i in range(args.processes)]
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        return max(codes)
    process_id, addresses = _cluster_from_env()
    run_flow(settings, args.flow, workers=workers, process_id=process_id, addresses=addresses)
    return 0


def cmd_flows(args: argparse.Namespace) -> int:
    for name, (module, doc) in available_flows().items():
        print(f"{name:<18} {doc}   [{module}]")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("flows", help="list the dataflows `vpp run` can start")
    p.set_defaults(func=cmd_flows)
    p = command(sub, "run", cmd_run, help="run one dataflow in the foreground against the configured services")
    p.add_argument("flow", help="flow name (see `vpp flows`)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker threads per process, at least 1 (default $BYTEWAX_WORKERS_PER_PROCESS or 1)")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="local processes on loopback, at least 1 (scale with processes, not threads)")
    p.add_argument("--recovery-dir", default=None, help="bytewax recovery store root (default $VPP_RECOVERY_DIR; empty = no recovery)")
    p.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--addresses", default=None, help=argparse.SUPPRESS)
