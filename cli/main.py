"""The `vpp` command line: a thin layer over the functions the flows use.

Each module of ``cli/`` exposes ``add_commands(subparsers)`` which adds its
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
import sys

from cli import (alerts, assets, demo, dispatch, dlq, flows, gateway, market, migrate, pki, plan, replay, schemas, serve,
                 simulate, stack, tokens, train, tree, users)
from cli.common import load_settings

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: The modules contributing sub-commands, in help order: an explicit table, nothing registers itself.
COMMAND_MODULES = (stack, migrate, schemas, simulate, assets, flows, replay, dlq, tree, dispatch, plan, market, train,
                   demo, alerts, users, tokens, serve, pki, gateway)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpp", description="Virtual power plant stream-processing platform")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


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
