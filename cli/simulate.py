"""``vpp simulate``: publish a simulated fleet to the broker, or write it as a kcat dump."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import fields
from datetime import datetime, timezone

from vpp.errors import UserError

__all__ = ["add_commands", "parse_start"]

_DEFAULT_DUMP_DURATION_S = 300.0
#: Fixed start of dumps without --start, so that a dump is reproducible from its flags alone
#: (midday in the continental US, when solar, load and battery are all moving).
DEFAULT_DUMP_START = "2026-06-21T18:00:00Z"


_FAULT_HELP = {
    "drop": "share of readings never sent",
    "duplicate": "share of readings sent twice",
    "out_of_order": "share of readings sent 1-20 s late",
    "late": "share of readings sent 30 s - 10 min late",
    "clock_skew": "share of DEVICES whose clock is off by 1 s - 15 min",
    "offline": "chance per reading that a device goes silent for 1-20 min",
    "garbage": "share of readings replaced by non-JSON bytes",
    "nan": "share of readings with a NaN power",
    "not_implemented": "share of sunspec/802 readings with a not-implemented register",
}


def parse_start(text: str, flag: str = "--start") -> int:
    """ISO-8601 (``Z`` or an offset; naive means UTC) or epoch milliseconds -> epoch ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{flag} {text!r} is not an ISO-8601 time (e.g. 2026-11-23T19:30:00Z) or epoch ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _within(low: float, high: float, what: str):
    """An argparse type: a number in [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_rate = _within(0.0, 1.0, "a rate between 0 and 1")
_percent = _within(0.0, 100.0, "a percentage between 0 and 100")
_non_negative = _within(0.0, float("inf"), "a number of at least 0")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def add_commands(subparsers) -> None:
    from cli.common import add_common
    from devtools.simulator.faults import FaultConfig

    p = subparsers.add_parser(
        "simulate",
        help="simulate a fleet of home batteries: publish raw telemetry, obey set points",
        description="Publish a deterministic simulated fleet's raw telemetry to telemetry.raw while "
        "obeying set points from device.commands, or write it as a kcat-format dump with --dump.",
    )
    p.add_argument("--devices", type=_positive(int), default=1000, metavar="N", help="number of devices (default 1000)")
    p.add_argument("--depth", type=_positive(int), default=5, metavar="D", help="region path segments incl. the site (default 5: country/state/utility/zip/site)")
    p.add_argument("--fanout", type=_positive(int), default=4, metavar="F", help="children per region node (default 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of fleet, noise and faults (default 0)")
    p.add_argument("--rate-s", type=_positive(float), default=5.0, metavar="SECONDS", help="seconds between a device's readings (default 5)")
    p.add_argument("--duration", type=_positive(float), default=None, metavar="S",
                   help=f"event-time seconds to simulate (default: until Ctrl-C; {_DEFAULT_DUMP_DURATION_S:g} with --dump)")
    p.add_argument("--speed", type=_positive(float), default=1.0, metavar="X", help="event-time seconds per wall second (default 1, real time)")
    p.add_argument("--start", default=None, metavar="ISO",
                   help=f"event time of the start (default now; {DEFAULT_DUMP_START} with --dump)")
    defaults = FaultConfig()
    for f in fields(FaultConfig):
        flag = "--fault-" + f.name.replace("_", "-")
        p.add_argument(flag, type=_rate, default=None, metavar="RATE", dest=f"fault_{f.name}",
                       help=f"{_FAULT_HELP[f.name]} (default {getattr(defaults, f.name):g})")
    p.add_argument("--no-faults", action="store_true", help="set every fault rate to 0 (single --fault-* flags still apply)")
    p.add_argument("--offline-file", default=None, metavar="FILE",
                   help="take devices offline on demand: FILE names device ids or region paths, one per line; "
                        "the running simulator re-reads it when it changes and keeps exactly those devices silent "
                        "and deaf to set points (remove a line, or the file, to bring them back)")
    p.add_argument("--conditions-file", default=None, metavar="FILE",
                   help="conditions on demand, re-read when FILE changes: lines 'islanded <device id or region path>' "
                        "(the devices report being off grid) and 'garbage <dialect>' (its devices send garbage)")
    g = p.add_argument_group("scenario (off by default)")
    g.add_argument("--program-reserve", type=_percent, default=None, metavar="PCT",
                   help="devices enrolled in peak shaving hold this SoC for the program: their self-consumption "
                        "stops there (100: they only charge from solar), dispatch set points may use it")
    g.add_argument("--surge-at", default=None, metavar="ISO",
                   help="an evening peak: from this time (ISO-8601 or epoch ms) every home's load rises by --surge-w")
    g.add_argument("--surge-w", type=_positive(float), default=None, metavar="W", help="extra load per home at the surge's plateau")
    g.add_argument("--surge-ramp-s", type=_non_negative, default=600.0, metavar="S", help="seconds the surge takes to rise and to fall (default 600)")
    g.add_argument("--surge-hold-s", type=_non_negative, default=1800.0, metavar="S", help="seconds the surge holds its plateau (default 1800)")
    p.add_argument("--assets-out", default=None, metavar="FILE.csv", help="where to write the assets CSV")
    p.add_argument("--no-register", action="store_true", help="do not write the assets to PostgreSQL")
    p.add_argument("--dump", default=None, metavar="FILE", help="write a kcat -J JSON Lines dump instead of publishing (no broker)")
    p.add_argument("--via-gateway", default=None, metavar="URL",
                   help="connect every device to the device gateway (wss://HOST:PORT/v1/device) instead of the broker")
    p.add_argument("--certs", default=None, metavar="DIR",
                   help="with --via-gateway: DIR/<device_id>/ holds each device's certificate (vpp pki issue --all --out DIR)")
    add_common(p)
    p.set_defaults(func=_cmd_simulate)


def _faults(args: argparse.Namespace):
    from devtools.simulator.faults import NO_FAULTS, FaultConfig

    base = NO_FAULTS if args.no_faults else FaultConfig()
    changes = {f.name: getattr(args, f"fault_{f.name}") for f in fields(FaultConfig) if getattr(args, f"fault_{f.name}") is not None}
    return FaultConfig(**{**{f.name: getattr(base, f.name) for f in fields(FaultConfig)}, **changes})


def _scenario(args: argparse.Namespace) -> dict:
    """The scenario options shared by SimulationConfig and PublishOptions."""
    from devtools.simulator.physics import LoadSurge

    if (args.surge_at is None) != (args.surge_w is None):
        raise UserError("--surge-at and --surge-w go together: when the evening peak starts and how much load it adds per home")
    surge = None
    if args.surge_at is not None:
        surge = LoadSurge(parse_start(args.surge_at, "--surge-at"), args.surge_w, args.surge_ramp_s, args.surge_hold_s)
    return {"program_reserve_pct": args.program_reserve, "load_surge": surge}


def _cmd_simulate(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    settings = load_settings(args)
    faults = _faults(args)
    try:
        if args.dump:
            return _dump(args, settings, faults)
        return _publish(args, settings, faults)
    except ValueError as exc:  # fleet shape or config out of range
        raise UserError(str(exc)) from exc


def _dump(args: argparse.Namespace, settings, faults) -> int:
    from devtools.simulator.dump import simulate_to_dump
    from devtools.simulator.stream import SimulationConfig
    from devtools.simulator.tree import build_fleet

    fleet = build_fleet(args.devices, args.depth, args.fanout, args.seed)
    config = SimulationConfig(start_ms=parse_start(args.start or DEFAULT_DUMP_START), rate_s=args.rate_s, faults=faults, seed=args.seed,
                              **_scenario(args))
    duration = args.duration or _DEFAULT_DUMP_DURATION_S
    partitions = int(settings.partitions.get("telemetry.raw", 4))
    try:
        lines, assets_path, sim = simulate_to_dump(args.dump, fleet, config, duration, partitions, args.assets_out)
    except OSError as exc:  # a directory that cannot be created, a file that cannot be written (dump or assets)
        raise UserError(f"cannot write {exc.filename or args.dump}: {exc.strerror or exc}") from None
    faulty = ", ".join(f"{k} {v}" for k, v in sorted(sim.stats.items()) if k not in ("ticks", "sent"))
    print(f"wrote {lines} records ({len(fleet)} devices, {duration:g} s from {args.start or DEFAULT_DUMP_START}) to {args.dump}")
    print(f"wrote the assets to {assets_path}")
    if faulty:
        print(f"faults: {faulty}")
    return 0


def _publish(args: argparse.Namespace, settings, faults) -> int:
    from devtools.simulator.kafka_io import PublishOptions, run_publisher

    options = PublishOptions(
        n_devices=args.devices, depth=args.depth, fanout=args.fanout, seed=args.seed, rate_s=args.rate_s,
        duration_s=args.duration, speed=args.speed, start_ms=parse_start(args.start) if args.start else None,
        faults=faults, assets_out=args.assets_out, register=not args.no_register, offline_file=args.offline_file,
        conditions_file=args.conditions_file,
        **_scenario(args),
    )
    if (args.via_gateway is None) != (args.certs is None):
        raise UserError("--via-gateway URL and --certs DIR go together: where the gateway is and where each device's certificate is")
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def progress(report) -> None:
        offline = f"; offline on demand {report.offline_devices}" if options.offline_file else ""
        print(f"sent {report.produced} readings; event time {_iso(report.last_event_ms)}; "
              f"set points applied {report.setpoints_applied}{offline}", file=sys.stderr)

    target = f"the gateway {args.via_gateway}" if args.via_gateway else f"{settings.topic('telemetry.raw')} on {settings.broker}"
    print(f"simulating {args.devices} devices to {target} (speed x{args.speed:g}; Ctrl-C stops)", file=sys.stderr)
    try:
        if args.via_gateway:
            from devtools.simulator.gateway_client import run_via_gateway

            report = run_via_gateway(settings, options, args.via_gateway, args.certs, stop, on_progress=progress)
        else:
            report = run_publisher(settings, options, stop, on_progress=progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"published {report.produced} readings of {len(report.fleet)} devices up to {_iso(report.last_event_ms)}; "
          f"set points applied {report.setpoints_applied}, undecodable commands {report.bad_commands}, "
          f"delivery errors {report.delivery_errors}; assets in {report.assets_csv}")
    return 1 if report.delivery_errors else 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
