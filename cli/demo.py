"""`vpp demo`: the whole platform on the local stack, live in the terminal.

Starts the stack, registers the schemas, starts every installed flow as its
own process (as Kubernetes would), runs the fleet simulator through the device
gateway (``vpp gateway``, every device with its own certificate), and shows live
counts per topic, dead letters by reason and the latest canonical readings.
Ctrl-C (or ``--duration``) stops the flows, the simulator and the stack, and
prints a closing summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cli.demo_alerts import (AlertScenario, alerts_panel, choose_conditions, demo_alert_settings, hold_s,
                             transition_lines, wait_for_assets)
from cli.demo_market import (DEMO_MARKET_LOCAL_START_H, market_rows, measure_interval_power, morning_utc_offset_h,
                             utc_zone)
from cli.demo_services import flow_role_env, start_console, start_gateway, start_market
from cli.common import add_common, load_settings

__all__ = ["add_commands", "DEMO_FLOWS"]

#: Flows the demo runs, in start order (those not installed are skipped).
DEMO_FLOWS = ("canonicalize", "store-telemetry", "store-dlq", "aggregate", "store-aggregates", "dispatch",
              "forecast-worker", "optimize-worker", "autobidder", "alerts", "store-alerts")


@dataclass
class _Processes:
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        with open(log, "ab") as fh:
            self.procs[name] = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True, env={**os.environ, **(env or {})})

    def states(self) -> dict[str, str]:
        return {n: ("running" if p.poll() is None else f"exited {p.returncode}") for n, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


class _Watcher:
    """Reads what the demo shows: messages per topic since start, dead letters by reason, latest readings."""

    def __init__(self, settings):
        from vpp.config import TOPICS
        from sinks.kafka_tools import TopicCounter
        from vpp.serde import Serde

        self.settings = settings
        self._names = {settings.topic(name): name for name in TOPICS}
        self._counter = TopicCounter(settings, list(self._names))
        self._canonical = settings.topic("telemetry.canonical")
        self._serde = Serde.from_settings(settings)
        self.latest: dict[str, dict] = {}
        self.measured: dict[int, dict[str, float]] = {}  # the bidding node's power by market interval
        self.since_ms = int(time.time() * 1000)  # when this run started

    def poll(self) -> None:
        for msg in self._counter.poll(0.3):
            if msg.topic() == self._canonical and msg.value():
                record = self._serde.decode(msg.value())
                self.latest[record["device_id"]] = record

    def topic_counts(self) -> dict[str, int]:
        return {self._names[t]: n for t, n in self._counter.counts.items()}

    def dead_letters(self) -> dict[str, int]:
        from cli.dlq import reason_counts

        try:
            return reason_counts(self.settings.postgres_dsn)
        except Exception:  # noqa: BLE001 - the table fills as store-dlq runs; show nothing until then
            return {}

    def tree(self, levels: int = 1) -> list[dict]:
        """Latest closed window of the top levels of the fleet tree (store-aggregates fills it)."""
        from sinks.node_state import read_node_state

        try:
            return read_node_state(self.settings.postgres_dsn, None, levels=levels)
        except Exception:  # noqa: BLE001 - empty until the first windows close; shown as nothing yet
            return []

    def close(self) -> None:
        self._counter.close()


@dataclass
class _DemoDispatch:
    """The dispatch the demo issues: a mid-level node, a share of its rated discharge power."""

    node_path: str
    device_ids: frozenset[str]
    target_w: float
    command_id: str = ""
    sent_at: float | None = None


def choose_dispatch(assets, *, depth: int = 2, share: float = 0.3) -> _DemoDispatch | None:
    """The node at ``depth`` with the most devices, and ``share`` of its devices' rated discharge power (pure)."""
    by_node: dict[str, list] = {}
    for a in assets:
        parts = a.region_path.split("/")
        if len(parts) >= depth:
            by_node.setdefault("/".join(parts[:depth]), []).append(a)
    if not by_node:
        return None
    node, members = max(by_node.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return _DemoDispatch(node, frozenset(a.device_id for a in members),
                         round(share * sum(a.max_discharge_w for a in members), -2))


def _node_battery_w(watcher: "_Watcher", dispatch: _DemoDispatch) -> float:
    """Sum of the latest battery power of the node's devices (each device's last canonical reading)."""
    return sum(r["battery_w"] or 0.0 for d, r in watcher.latest.items() if d in dispatch.device_ids)


def _render(watcher: _Watcher, procs: _Processes, started: float, dispatch: _DemoDispatch | None = None,
            bidding_node: str | None = None, market_offset_h: float = 0.0):
    from datetime import datetime, timezone

    from rich.console import Group
    from rich.table import Table

    sizes = watcher.topic_counts()
    topics = Table(title=f"topics (messages since start, {time.monotonic() - started:.0f} s)")
    topics.add_column("topic")
    topics.add_column("messages", justify="right")
    for name, n in sizes.items():
        topics.add_row(name, f"{n:,}")
    dlq = Table(title="dead letters by reason (PostgreSQL)")
    dlq.add_column("reason")
    dlq.add_column("count", justify="right")
    for reason, n in list(watcher.dead_letters().items())[:8]:
        dlq.add_row(reason, f"{n:,}")
    latest = Table(title="latest canonical readings")
    for col in ("device", "region", "time (UTC)", "SoC %", "battery W", "solar W", "load W", "grid W", "flags"):
        latest.add_column(col)
    for r in sorted(watcher.latest.values(), key=lambda r: r["ts"], reverse=True)[:6]:
        latest.add_row(r["device_id"], r["region_path"], datetime.fromtimestamp(r["ts"] / 1000, timezone.utc).strftime("%H:%M:%S"),
                       _fmt(r["soc_pct"]), _fmt(r["battery_w"]), _fmt(r["solar_w"]), _fmt(r["load_w"]), _fmt(r["grid_w"]),
                       ",".join(r["flags"]) or "-")
    panels = [topics, dlq, latest]
    from cli.tree import render_tree, tree_rows

    tree = watcher.tree()
    if tree:
        panels.append(render_tree(tree_rows(tree), "fleet tree, top levels (latest closed window, kW / kWh)"))
    if dispatch is not None:
        aggregate = next((r for r in watcher.tree(levels=dispatch.node_path.count("/"))
                          if r["node_path"] == dispatch.node_path), None)
        node = Table(title=f"dispatch at {dispatch.node_path} ({len(dispatch.device_ids)} devices)")
        for col in ("command", "target W", "battery W (latest readings)", "battery W (last window aggregate)"):
            node.add_column(col)
        node.add_row(dispatch.command_id or "not yet sent",
                     f"{dispatch.target_w:,.0f}" if dispatch.command_id else "-",
                     f"{_node_battery_w(watcher, dispatch):,.0f}",
                     "-" if aggregate is None else f"{aggregate['battery_w']:,.0f}")
        panels.append(node)
    if bidding_node is not None:
        from sinks.autobidder_store import workflow_facts

        try:
            facts = workflow_facts(watcher.settings.postgres_dsn, bidding_node)
        except Exception:  # noqa: BLE001 - the table fills as the autobidder runs
            facts = []
        interval_s = watcher.settings.market_interval_s
        market = Table(title=f"market: autobidder for {bidding_node} ({interval_s // 60}-minute intervals in UTC, $/MWh, W > 0 "
                             f"discharge; pricing node at {utc_zone(market_offset_h)}, its {DEMO_MARKET_LOCAL_START_H:g} h at the start)")
        for col in ("interval", "forecast price", "planned W", "bid", "award", "measured battery W (in it)"):
            market.add_column(col)
        # the intervals this run bids for (the first starts ~5 min after the newest price): PostgreSQL keeps
        # the facts of earlier runs too
        readings = [r for r in watcher.latest.values() if f"{r['region_path']}/".startswith(f"{bidding_node}/")]
        if readings:  # the node's power from its devices' latest readings (the node_state windows lag at --speed)
            measure_interval_power(watcher.measured, {"window_start": max(r["ts"] for r in readings),
                                                      "battery_w": sum(r["battery_w"] or 0.0 for r in readings)},
                                   interval_s * 1000)
        for row in market_rows(facts, watcher.measured, watcher.since_ms - interval_s * 1000):
            market.add_row(*row)
        if not facts:
            market.add_row("waiting for the first price and aggregate", "", "", "", "", "")
        panels.append(market)
    running = Table(title="processes")
    running.add_column("process")
    running.add_column("state")
    for name, state in procs.states().items():
        running.add_row(name, state)
    return Group(*panels, running), sizes


def _fmt(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _send_demo_dispatch(settings, dispatch: _DemoDispatch) -> None:
    from cli.dispatch import command_record
    from sinks.dispatch_commands import send_command

    record = command_record(dispatch.node_path, dispatch.target_w, 15, start_ms=int(time.time() * 1000), issued_by="demo")
    send_command(settings, record)
    dispatch.command_id, dispatch.sent_at = record["command_id"], time.monotonic()


def _reset_recovery(directory: Path, log: Callable[[str], None]) -> None:
    """Start every flow of the demo afresh when the local broker starts empty (it keeps topics in memory).

    A recovery store resumes a flow at the input offsets of its last snapshot. Against a broker
    that started empty, those offsets point past readings that are now at offsets 0, 1, ...: a
    second ``vpp demo`` with the first one's store skipped as many readings as the first had read.
    Without it, each flow reads its topics from the start (the stores upsert what they see again).
    """
    if directory.exists():
        shutil.rmtree(directory)
        log(f"recovery stores reset ({directory}): the local broker starts empty, so the last run's offsets are void")


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console, Group
    from rich.live import Live

    from cli.flows import available_flows
    from cli.schemas import register_all
    from devtools.stack import Stack

    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets readable, unwrapped tables
    settings = load_settings(args)
    state_dir = Path(settings.state_dir).absolute()
    stack = Stack(state_dir, partitions=dict(settings.partitions), topic_prefix=settings.topic_prefix)
    console.print(f"[bold]vpp demo[/]: starting the local stack in {state_dir}")
    broker_was_up = any(s.name == "broker" and s.healthy for s in stack.status().services)
    stack.up(log=console.print)
    settings = load_settings(args)  # now with the stack's addresses
    register_all(settings)
    console.print("schemas registered")

    common = ["--state-dir", str(state_dir)] + (["--config", args.config] if args.config else [])
    if not broker_was_up:  # a kept stack (--keep-stack) still holds the topics those offsets point into
        _reset_recovery(state_dir / "recovery", log=console.print)
    vpp = [sys.executable, "-m", "cli"]
    logs = state_dir / "logs"
    procs = _Processes()
    watcher = None
    started = time.monotonic()
    summary = {}
    scenario = AlertScenario.in_state_dir(state_dir)
    transitions: list = []
    try:
        watcher = _Watcher(settings)  # counting from now: before anything starts producing
        bidding_node, market_offset_h = None, 0.0
        flow_env = flow_role_env(state_dir, settings) | demo_alert_settings(args.speed)
        if args.gateway and args.speed > 1:  # event time ahead of the gateway's (real) clock: not a skewed device
            flow_env["VPP_PLATFORM_CLOCK_CHECK"] = "false"
        if args.market and "autobidder" in available_flows():
            # the market's clock runs at the fleet's speed: awards are dispatched in the fleet's event time
            # the pricing node's local time zone puts its morning ramp at the start (see DEMO_MARKET_LOCAL_START_H)
            market_offset_h = morning_utc_offset_h(int(time.time() * 1000))
            market_url = start_market(procs, vpp + ["market", "serve", "--backfill-days", "1", "--speed", str(args.speed),
                                                    "--utc-offset-h", str(market_offset_h)] + common, logs)
            bidding_node = "us"  # the simulated fleet's root
            flow_env |= {"VPP_MARKET_URL": market_url, "VPP_AUTOBIDDER_NODES": bidding_node}
        for name in DEMO_FLOWS:
            if name in available_flows():
                procs.start(name, vpp + ["run", name, "--recovery-dir", str(state_dir / "recovery")] + common,
                            logs / f"flow-{name}.log", env=flow_env)
        sim = vpp + ["simulate", "--devices", str(args.devices), "--speed", str(args.speed), "--seed", str(args.seed),
                     "--assets-out", str(state_dir / "assets.csv"),
                     # a little more garbage than the simulator's realistic default, so the DLQ shows in a short demo
                     "--fault-garbage", "0.003", "--fault-nan", "0.003"] + scenario.simulator_args() + common
        if args.gateway:
            url, certs = start_gateway(procs, vpp, common, logs, state_dir, settings, args, console.print)
            sim += ["--via-gateway", url, "--certs", str(certs)]
        procs.start("simulator", sim, logs / "simulator.log")
        console.print(f"started {len(procs.procs)} processes (logs in {logs})")
        # the console is not a flow: it keeps the owner's DSN (users, tokens, its audit log), and gets the market's URL
        console_env = {k: v for k, v in flow_env.items() if k != "VPP_POSTGRES_DSN"}
        start_console(procs, vpp + ["serve"] + common, logs, settings, console, env=console_env)
        deadline = started + args.duration if args.duration else None
        assets = wait_for_assets(state_dir / "assets.csv", started + 30)
        dispatch = None
        if args.dispatch_after is None:  # with the market, its awards dispatch the fleet: a second order would fight them
            args.dispatch_after = 0.0 if bidding_node else 60.0
        if "dispatch" in available_flows() and args.dispatch_after > 0 and assets:
            dispatch = choose_dispatch(assets)
        if "alerts" in available_flows() and args.alerts_after > 0 and assets:
            scenario.plan(choose_conditions(assets, avoid=dispatch and dispatch.node_path),
                          time.monotonic() + args.alerts_after, args.speed)
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while deadline is None or time.monotonic() < deadline:
                watcher.poll()
                if dispatch is not None and not dispatch.command_id and time.monotonic() > started + args.dispatch_after:
                    _send_demo_dispatch(settings, dispatch)
                view, summary = _render(watcher, procs, started, dispatch, bidding_node, market_offset_h)
                if (line := scenario.step(time.monotonic())) is not None:
                    console.print(line)
                if scenario.conditions is not None:
                    transitions = scenario.transitions(settings.postgres_dsn)
                    view = Group(view, alerts_panel(transitions, scenario.conditions))
                live.update(view)
                time.sleep(0.8)
    except KeyboardInterrupt:
        console.print("stopping (Ctrl-C)")
    finally:
        dead = watcher.dead_letters() if watcher else {}
        transitions = scenario.transitions(settings.postgres_dsn) if scenario.conditions else transitions
        if watcher:
            watcher.close()
        procs.stop()
        if not args.keep_stack:
            stack.down(log=console.print)
    console.print("[bold]summary[/] (messages per topic during the demo):")
    for name, n in summary.items():
        console.print(f"  {name:<22} {n:>10,}")
    console.print(f"  dead letters by reason: {dead or 'none'}")
    console.print(f"  alert transitions (firing, resolved): {len(transitions) or 'none'}")
    for line in transition_lines(transitions):
        console.print("    " + "  ".join(line))
    return 0 if summary.get("telemetry.canonical", 0) > 0 else 1


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="run the whole platform on the local stack and show it live (Ctrl-C stops)")
    add_common(p)
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--devices", type=int, default=300, help="simulated devices (default 300)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="event-time seconds per wall second, for the fleet and the market (default 10: a 5-minute "
                        "market interval clears every 30 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-stack", action="store_true", help="leave the services running afterwards")
    p.add_argument("--no-market", dest="market", action="store_false",
                   help="do not run the market simulator and the autobidder")
    p.add_argument("--no-gateway", dest="gateway", action="store_false",
                   help="the simulator writes to the broker itself instead of connecting through the device gateway")
    p.add_argument("--dispatch-after", type=float, default=None,
                   help="seconds before the demo dispatches a mid-level node (0: never; default 60 with --no-market, "
                        "else never: the market's awards dispatch the whole fleet, and a second order would fight them)")
    p.add_argument("--alerts-after", type=float, default=20.0,
                   help="seconds after the fleet registers before the demo takes devices offline and islands a region "
                        f"for {hold_s(10):.0f} simulated s at the default speed, to show alerts firing and resolving (0: never; default 20)")
    p.set_defaults(func=cmd_demo)
