"""What every `vpp` command shares: the common options, argument types, and reading the settings."""

from __future__ import annotations

import argparse

__all__ = ["add_common", "positive_int", "load_settings"]

def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command shares: where the local stack lives, an optional TOML config."""
    parser.add_argument("--state-dir", default=None, help="local stack state directory (default .vpp/ or $VPP_STATE_DIR)")
    parser.add_argument("--config", default=None, help="optional TOML settings file (or $VPP_CONFIG)")


def command(sub, name: str, handler, **options) -> argparse.ArgumentParser:
    """The sub-command ``name`` of ``sub`` (``add_parser`` options), with the common options, run by ``handler``."""
    parser = sub.add_parser(name, **options)
    add_common(parser)
    parser.set_defaults(func=handler)
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (workers, processes, a row limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def load_settings(args: argparse.Namespace):
    from vpp.config import Settings

    return Settings.load(state_dir=getattr(args, "state_dir", None), config_file=getattr(args, "config", None))
