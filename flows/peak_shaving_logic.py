"""Peak shaving (spec fleet.md section 4): per node, discharge the net import above a threshold.

Pure: one ``shave_step(state, aggregate, config)`` per ``fleet.aggregates`` record of a node with
a threshold, returning the new state and at most one ``dispatch.commands`` record.

- The node's *underlying* import is what it would import without us: the measured ``grid_w``
  plus the discharge we are commanding now (our own batteries lower the measured import).
- Engage when the underlying import exceeds ``threshold_w``: command the excess, bounded by what
  the node can do (``discharge_available_w``), with ``program = peak_shaving`` so that only
  enrolled devices take part.
- While engaged, follow the excess: re-issue when the wanted power differs from the commanded
  one by more than ``deadband_w`` (the new command supersedes the old one), and renew a command
  ``settle_s`` + two windows before it ends, so that the new one is at the devices in time.
- After engaging or changing the power, wait ``settle_s`` before judging again. A command shows
  in the aggregates only after the loop's delay (the window closing, the flows' hops, the
  devices' next readings: two to four windows); judged earlier, the measured import still
  carries the old power while the underlying estimate adds the new one, the excess looks larger
  than it is, and the power hunts between 0 and twice the excess. ``settle_s`` must exceed the
  loop's delay. Renewing the same power does not restart the wait.
- Release (hysteresis) only when the underlying import falls below ``threshold_w - hysteresis_w``:
  a 0 W command supersedes the last one and releases its devices. Between the two levels nothing
  changes, so a load hovering at the threshold does not make the batteries flap.

Command ids are derived from the node and the window (``ps:<node>:<window_end>``), so a replay or
an at-least-once restart re-produces the same id and dispatch ignores the copy.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ShavingConfig", "ShavingState", "shave_step", "load_thresholds", "PROGRAM", "ISSUER"]

PROGRAM = "peak_shaving"
ISSUER = "peak-shaving"


@dataclass(frozen=True)
class ShavingConfig:
    """Thresholds of one node, W; ``command_s``: how long each command runs unless renewed;
    ``settle_s``: how long a new power is given to show in the aggregates before it is judged."""

    threshold_w: float
    hysteresis_w: float = 1000.0
    deadband_w: float = 500.0
    command_s: int = 900
    settle_s: int = 30

    def __post_init__(self) -> None:
        if self.hysteresis_w < 0 or self.deadband_w < 0 or self.command_s <= 0 or self.settle_s < 0:
            raise ValueError(f"peak shaving config {self}: hysteresis_w, deadband_w and settle_s must be >= 0, command_s > 0")


@dataclass(frozen=True)
class ShavingState:
    """Whether the node is being shaved, the power commanded and until when."""

    engaged: bool = False
    target_w: float = 0.0
    command_end_ms: int = 0
    #: The newest window taken: an older or repeated aggregate (an at-least-once copy) changes nothing.
    window_end_ms: int = 0
    #: Until then the last power change may not show yet: hold it (renewals excepted).
    settle_until_ms: int = 0


def _command(node: str, target_w: float, start_ms: int, duration_ms: int) -> dict[str, Any]:
    return {"command_id": f"ps:{node}:{start_ms}", "node_path": node, "target_w": float(round(target_w, 1)),
            "start": start_ms, "end": start_ms + duration_ms, "issued_by": ISSUER, "program": PROGRAM}


def shave_step(state: ShavingState | None, aggregate: Mapping[str, Any],
               config: ShavingConfig) -> tuple[ShavingState, dict[str, Any] | None]:
    """The next state of one node after its aggregate for a window, and the command to send (if any)."""
    state = state or ShavingState()
    node, now = aggregate["node_path"], int(aggregate["window_end"])
    if now <= state.window_end_ms:
        return state, None
    window_ms = max(1, now - int(aggregate["window_start"]))
    state = replace(state, window_end_ms=now)
    commanded = state.target_w if state.engaged and now < state.command_end_ms else 0.0
    underlying_w = float(aggregate["grid_w"]) + commanded
    excess_w = underlying_w - config.threshold_w
    available_w = max(0.0, float(aggregate.get("discharge_available_w") or 0.0))
    duration_ms = config.command_s * 1000
    settle_until = now + config.settle_s * 1000
    if not state.engaged:
        if excess_w <= 0 or available_w <= 0:
            return state, None
        cmd = _command(node, min(excess_w, available_w), now, duration_ms)
        return replace(state, engaged=True, target_w=cmd["target_w"], command_end_ms=cmd["end"],
                       settle_until_ms=settle_until), cmd
    # renew early enough for the new command to reach the devices before the old one ends
    renew = now >= state.command_end_ms - 2 * window_ms - config.settle_s * 1000
    settling = now < state.settle_until_ms  # the last change may not show yet: judge nothing
    if not settling and underlying_w < config.threshold_w - config.hysteresis_w:
        # release: a 0 W command supersedes the last one and frees its devices; short, so that an
        # operator's command on an ancestor gets them back soon
        return ShavingState(window_end_ms=now), _command(node, 0.0, now, 2 * window_ms)
    wanted = state.target_w if settling else min(max(excess_w, 0.0), available_w)
    if abs(wanted - state.target_w) > config.deadband_w or renew:
        cmd = _command(node, wanted, now, duration_ms)
        changed = cmd["target_w"] != state.target_w
        return replace(state, target_w=cmd["target_w"], command_end_ms=cmd["end"],
                       settle_until_ms=settle_until if changed else state.settle_until_ms), cmd
    return state, None


def load_thresholds(path: str | Path) -> dict[str, ShavingConfig]:
    """Per-node thresholds from the ``[peak_shaving.nodes."<node>"]`` tables of a TOML file.

    ``[peak_shaving]`` may set defaults (``hysteresis_w``, ``deadband_w``, ``command_s``, ``settle_s``) for every
    node; each node table needs ``threshold_w``. Example::

        [peak_shaving]
        hysteresis_w = 2000
        [peak_shaving.nodes."us/ca/pge"]
        threshold_w = 150000
    """
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read peak-shaving thresholds from {path}: {exc}") from exc
    section = doc.get("peak_shaving", {})
    defaults = {k: v for k, v in section.items() if k in ("hysteresis_w", "deadband_w", "command_s", "settle_s")}
    out: dict[str, ShavingConfig] = {}
    for node, table in section.get("nodes", {}).items():
        if "threshold_w" not in table:
            raise ValueError(f"{path}: [peak_shaving.nodes.\"{node}\"] needs threshold_w (watts of net import)")
        out[node.strip("/")] = ShavingConfig(**{**defaults, **table})
    return out
