"""The `vpp` command line: a thin layer over the functions the flows use.

Each feature module exposes ``add_commands(subparsers)`` which adds its
sub-commands with ``set_defaults(func=handler)``; a handler takes the parsed
``argparse.Namespace`` and returns an exit code. Handlers import heavy
libraries lazily so that ``vpp --help`` stays fast.

``main`` reports what the user can fix as one line ``vpp: error: ...`` and
no traceback: a ``UserError`` (exit 1), a bad setting (``ConfigError``: a
config file that cannot be read, an unknown key, a value of the wrong type
or out of range; exit 2, like a bad option) and a service of the stack that
cannot be reached (PostgreSQL, the broker, the schema registry; exit 1).
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

#: Modules contributing sub-commands, in help order.
COMMAND_MODULES = (
    "vpp.stack_cli",
    "vpp.schema_cli",
    "vpp.simulator.cli",
    "vpp.assets",
    "vpp.flows_cli",
    "vpp.replay_cli",
    "vpp.dlq_cli",
    "vpp.tree_cli",
    "vpp.dispatch_cli",
    "vpp.plan_cli",
    "vpp.market.cli",
    "vpp.train_cli",
    "vpp.demo",
    "cli.pki",
    "cli.gateway",
)


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command shares: where the local stack lives, an optional TOML config."""
    parser.add_argument("--state-dir", default=None, help="local stack state directory (default .vpp/ or $VPP_STATE_DIR)")
    parser.add_argument("--config", default=None, help="optional TOML settings file (or $VPP_CONFIG)")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (workers, processes, a row limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpp", description="Virtual power plant stream-processing platform")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_commands(sub)
    return parser


def load_settings(args: argparse.Namespace):
    from vpp.config import Settings

    return Settings.load(state_dir=getattr(args, "state_dir", None), config_file=getattr(args, "config", None))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vpp.config import ConfigError
    from vpp.errors import UserError, first_line, service_unreachable

    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"vpp: error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"vpp: error: {first_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        unreachable = service_unreachable(exc, _settings_or_none(args))
        if unreachable is None:
            raise
        print(f"vpp: error: {unreachable}", file=sys.stderr)
        return 1


def _settings_or_none(args: argparse.Namespace):
    """The settings the failed command ran with, to name the service it could not reach (None if unreadable)."""
    try:
        return load_settings(args)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
