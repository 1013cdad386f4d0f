"""What goes wrong in a real fleet, at configurable rates (each may be set to 0).

Rates are probabilities per reading unless said otherwise. Defaults are small
and realistic: a day of a 1000-device fleet at 5 s shows every kind a few
hundred times, while more than 99 % of readings arrive clean.

| fault | rate meaning | default | effect |
|---|---|---|---|
| ``drop`` | per reading | 0.002 | never sent |
| ``duplicate`` | per reading | 0.002 | the same bytes sent twice, the copy 0-2 s later |
| ``out_of_order`` | per reading | 0.005 | sent 1-20 s late, after newer readings |
| ``late`` | per reading | 0.001 | buffered at the edge, sent 30 s - 10 min late |
| ``clock_skew`` | per DEVICE | 0.01 | the device clock is off by 1 s - 15 min (log-uniform, either sign) for the whole run; beyond 300 s ahead its readings are future-dated |
| ``offline`` | per reading | 0.0002 | the device goes silent for 1-20 min, then comes back |
| ``garbage`` | per reading | 0.0005 | the value is not JSON: truncated JSON, text, or bytes that are not UTF-8 |
| ``nan`` | per reading | 0.0005 | one power is the bare JSON literal ``NaN`` |
| ``not_implemented`` | per sunspec/802 reading | 0.002 | one register holds -32768 (int16) or 65535 (uint16) |

Late and out-of-order readings keep their ``received_at`` (the edge got them
on time and forwarded them late); the Kafka message timestamp is when the
gateway sent them.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["FaultConfig", "NO_FAULTS", "FAULT_NAMES", "garbage_bytes", "inject_nan", "inject_not_implemented"]


@dataclass(frozen=True)
class FaultConfig:
    drop: float = 0.002
    duplicate: float = 0.002
    out_of_order: float = 0.005
    late: float = 0.001
    clock_skew: float = 0.01
    offline: float = 0.0002
    garbage: float = 0.0005
    nan: float = 0.0005
    not_implemented: float = 0.002

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"fault rate {f.name} must be between 0 and 1, got {value!r}")


NO_FAULTS = FaultConfig(**{f.name: 0.0 for f in fields(FaultConfig)})
FAULT_NAMES = tuple(f.name for f in fields(FaultConfig))

OUT_OF_ORDER_DELAY_MS = (1_000, 20_000)
LATE_DELAY_MS = (30_000, 600_000)
DUPLICATE_GAP_MS = (0, 2_000)
OFFLINE_MS = (60_000, 1_200_000)
SKEW_MS = (1_000, 900_000)

_NOT_IMPLEMENTED = (("802", "SoC", 65535), ("802", "W", -32768), ("802", "WHRtg", 65535), ("203", "W", -32768))


def clock_skew_ms(rng: random.Random) -> int:
    """A device clock offset: log-uniform magnitude in SKEW_MS, either sign."""
    lo, hi = SKEW_MS
    magnitude = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return int(magnitude) * (1 if rng.random() < 0.5 else -1)


def garbage_bytes(rng: random.Random, good: bytes) -> bytes:
    """What a broken gateway or a flipped bit sends instead of a reading. Never valid JSON."""
    kind = rng.randrange(4)
    if kind == 0:  # truncated mid-object
        return good[: max(1, rng.randrange(len(good) // 2 + 1))]
    if kind == 1:  # not UTF-8 at all
        return b"\xff\xfe" + bytes(rng.randrange(256) for _ in range(rng.randrange(8, 48)))
    if kind == 2:  # a valid prefix, then invalid UTF-8 (unterminated, so not JSON even when decoded lossily)
        return good[: len(good) // 3] + b"\xc3\x28\xa0\xa1"
    return b"<html><body>502 Bad Gateway</body></html>"


def inject_nan(payload: dict[str, Any], dialect: str, rng: random.Random) -> tuple[dict[str, Any], str]:
    """A copy of ``payload`` with one power set to NaN; returns it and the dotted field path."""
    out = copy.deepcopy(payload)
    if dialect == "tesla-gateway/1":
        name = rng.choice(("site", "battery", "load", "solar"))
        out["aggregates"][name]["instant_power"] = float("nan")
        return out, f"payload.aggregates.{name}.instant_power"
    if dialect == "sonnen/2":
        name = rng.choice(("Pac_total_W", "Production_W", "Consumption_W", "GridFeedIn_W"))
        out[name] = float("nan")
        return out, f"payload.{name}"
    out["models"]["802"]["W"] = float("nan")
    return out, "payload.models.802.W"


def inject_not_implemented(payload: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str]:
    """A copy of a sunspec/802 payload with one register "not implemented"."""
    out = copy.deepcopy(payload)
    choices = [c for c in _NOT_IMPLEMENTED if c[0] in out["models"]]
    model, register, sentinel = rng.choice(choices)
    out["models"][model][register] = sentinel
    return out, f"payload.models.{model}.{register}"
