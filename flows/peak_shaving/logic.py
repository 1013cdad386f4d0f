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

import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from vpp.commands import MAX_COMMAND_PERIOD_MS
from vpp.config import ConfigError

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
        for f in fields(self):
            problem = _value_problem(f.name, getattr(self, f.name))
            if problem:
                raise ValueError(f"peak shaving config: {problem}")
        problem = _hysteresis_problem(self.threshold_w, self.hysteresis_w)
        if problem:
            raise ValueError(f"peak shaving config: {problem}")


#: What each setting must be: (whole seconds?, whether 0 is allowed, what the error says it must be).
_RULES: Mapping[str, tuple[bool, bool, str]] = {
    "threshold_w": (False, False, "a positive number of watts"),
    "hysteresis_w": (False, True, "a number of watts, 0 or more"),
    "deadband_w": (False, True, "a number of watts, 0 or more"),
    # whole seconds: they become the epoch-ms ``start``/``end`` (Avro longs) of the commands
    "command_s": (True, False, "a whole number of seconds, more than 0"),
    "settle_s": (True, True, "a whole number of seconds, 0 or more"),
}
#: The keys ``[peak_shaving]`` may hold: defaults for every node, and the node tables.
_DEFAULT_KEYS = ("hysteresis_w", "deadband_w", "command_s", "settle_s")
_SECTION_KEYS = (*_DEFAULT_KEYS, "nodes")


def _show(value: Any) -> str:
    """A value as it reads in TOML, on one line: ``"5000"`` for a string, ``true``, ``nan``, ``inf``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    return json.dumps(value, ensure_ascii=False, default=str)


def _key(name: str) -> str:
    """A TOML key: bare if it can be, else quoted (and escaped, so the message stays one line)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)


def _value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be setting ``name`` (None if it can): a real, finite number, whole where needed."""
    whole, zero_ok, must = _RULES[name]
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and (whole or _finite(value)) and (value > 0 or (zero_ok and value == 0))
    if not ok:
        return f"{name} must be {must}, got {_show(value)}"
    if name == "command_s" and value * 1000 > MAX_COMMAND_PERIOD_MS:  # the dispatch flow would reject every command
        return (f"command_s must be at most {MAX_COMMAND_PERIOD_MS // 1000:,} ({MAX_COMMAND_PERIOD_MS // 86_400_000} days, "
                f"the longest command dispatch takes), got {_show(value)}")
    return None


def _finite(value: int | float) -> bool:
    """A finite number a float can hold (an int beyond 1.8e308 W would overflow the arithmetic)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _hysteresis_problem(threshold_w: float, hysteresis_w: float) -> str | None:
    if hysteresis_w < threshold_w:
        return None
    return (f"hysteresis_w {_show(hysteresis_w)} must be less than threshold_w {_show(threshold_w)}: the node is released "
            "when its import falls below threshold_w - hysteresis_w, so it would never be released")


def _unknown(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
    return f"unknown key {_key(name)} ({hint})"


def _whole_seconds(name: str, value: Any) -> Any:
    """TOML ``30.0`` for a whole-seconds setting is 30 (as ``vpp.config`` reads its own seconds)."""
    if _RULES[name][0] and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


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

    A file that cannot be used raises ``ConfigError``, one line naming the file, the table, the key and the
    value: an unknown key, a value that is not a real finite number (a bool or a string is not one; seconds
    are whole), a threshold of 0 W or less, a hysteresis not below the threshold (the node would never be
    released), a node key that is no node path, or two keys for the same node (``"a/b"`` and ``"a/b/"``).
    """
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read peak-shaving thresholds from {path}: {exc}") from exc
    section = doc.get("peak_shaving", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: peak_shaving must be a table ([peak_shaving]), got {_show(section)}")
    defaults: dict[str, Any] = {}
    for name, value in section.items():
        if name not in _SECTION_KEYS:
            hint = " (threshold_w goes in each node table)" if name == "threshold_w" else ""
            raise ConfigError(f"{path}: [peak_shaving] {_unknown(name, _SECTION_KEYS)}{hint}")
        if name in _DEFAULT_KEYS:
            value = _whole_seconds(name, value)
            problem = _value_problem(name, value)
            if problem:
                raise ConfigError(f"{path}: [peak_shaving] {problem}")
            defaults[name] = value
    nodes = section.get("nodes", {})
    if not isinstance(nodes, dict):
        raise ConfigError(f'{path}: [peak_shaving] nodes must be tables [peak_shaving.nodes."<node path>"], got {_show(nodes)}')
    out: dict[str, ShavingConfig] = {}
    spelled: dict[str, str] = {}
    for node, table in nodes.items():
        where = f"[peak_shaving.nodes.{json.dumps(node, ensure_ascii=False)}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where} must be a table with threshold_w, got {_show(table)}")
        node_path = node.strip("/")
        if not node_path or any(not s or s != s.strip() for s in node_path.split("/")):
            raise ConfigError(f"{path}: {where} is not a node path: '/'-separated non-empty names, e.g. us/ca/pge")
        if node_path in spelled:
            raise ConfigError(f"{path}: {where} is the same node as [peak_shaving.nodes.{json.dumps(spelled[node_path], ensure_ascii=False)}] "
                              f"({json.dumps(node_path, ensure_ascii=False)}): give each node one table")
        spelled[node_path] = node
        values = dict(defaults)
        for name, value in table.items():
            if name not in _RULES:
                raise ConfigError(f"{path}: {where} {_unknown(name, tuple(_RULES))}")
            value = _whole_seconds(name, value)
            problem = _value_problem(name, value)
            if problem:
                raise ConfigError(f"{path}: {where} {problem}")
            values[name] = value
        if "threshold_w" not in values:
            raise ConfigError(f"{path}: {where} needs threshold_w (watts of net import)")
        problem = _hysteresis_problem(values["threshold_w"], values.get("hysteresis_w", ShavingConfig.hysteresis_w))
        if problem:
            source = "" if "hysteresis_w" in table else (" (from [peak_shaving])" if "hysteresis_w" in defaults else " (the default)")
            raise ConfigError(f"{path}: {where} {problem.replace(' must', source + ' must', 1)}")
        out[node_path] = ShavingConfig(**values)
    return out
