"""The life of a device in the registry: lifecycle states, program enrollments, and the events a change makes.

Pure (no I/O, no clock): ``sinks.asset_registry`` reads the current rows, asks these functions what the
change makes of them (or why it is refused), writes the result in one transaction, and the CLI and the
operator API publish the events on ``fleet.events`` (kinds and fields of spec alerts.md section 1).

Lifecycle (an operator's rules)::

    registered -> commissioned -> active <-> suspended
         \\______________\\__________\\___________\\______-> decommissioned (final)

Only ``active`` devices are dispatched; a ``decommissioned`` device leaves the tree and every dispatch pool
(the flows' caches drop it), keeps its history, and its id is never reused: a replacement is a new device
that names the one it ``replaces`` (same site), so the site's history stays linked.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from vpp.errors import UserError

__all__ = ["STATUSES", "TRANSITIONS", "DISPATCHABLE", "PROGRAMS", "MARKET_PROGRAM", "PEAK_SHAVING_PROGRAM", "Enrollment", "check_transition",
           "enrollments_from_json", "enrollments_to_json", "parse_programs_cell", "programs_cell",
           "default_enrollments", "effective", "current", "enroll", "unenroll", "change_events", "event_id", "stable_id"]

STATUSES = ("registered", "commissioned", "active", "suspended", "decommissioned")
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "registered": frozenset({"commissioned", "decommissioned"}),
    "commissioned": frozenset({"active", "suspended", "decommissioned"}),
    "active": frozenset({"suspended", "decommissioned"}),
    "suspended": frozenset({"active", "decommissioned"}),
    "decommissioned": frozenset(),
}
#: the statuses whose devices dispatch may use
DISPATCHABLE = frozenset({"active"})
#: programs the flows act on: ``peak_shaving`` (the peak-shaving flow's commands), ``market`` (the autobidder's)
MARKET_PROGRAM, PEAK_SHAVING_PROGRAM = "market", "peak_shaving"
PROGRAMS = (MARKET_PROGRAM, PEAK_SHAVING_PROGRAM)
_PROGRAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def stable_id(*parts: object) -> str:
    """A short deterministic id of ``parts`` (the same fact gives the same id)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def event_id(kind: str, subject: str, at: int, *extra: object) -> str:
    """The id of a ``fleet.events`` record: the same fact read twice has the same id."""
    return stable_id("event", kind, subject, at, *extra)


def check_transition(device_id: str, old: str, new: str) -> None:
    """Raise a UserError naming the allowed next states when ``old -> new`` is not a lifecycle step."""
    if new not in STATUSES:
        raise UserError(f"unknown status {new!r}; one of {', '.join(STATUSES)}")
    if new == old:
        return
    allowed = TRANSITIONS[old]
    if new not in allowed:
        nxt = ", ".join(s for s in STATUSES if s in allowed) or "none: it is final"
        raise UserError(f"device {device_id!r} is {old}: it cannot become {new} (from {old} it can become {nxt})")


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A device in a program from ``from_ms`` (None: always) until ``to_ms`` (None: open), holding ``reserve_pct``
    of its capacity back from that program's commands."""

    program: str
    reserve_pct: float = 0.0
    from_ms: int | None = None
    to_ms: int | None = None

    def covers(self, ts_ms: int) -> bool:
        return (self.from_ms is None or self.from_ms <= ts_ms) and (self.to_ms is None or ts_ms < self.to_ms)


_DEFAULTS = {True: (Enrollment("market"), Enrollment("peak_shaving")), False: (Enrollment("market"),)}


def default_enrollments(enrolled_peak_shaving: bool) -> tuple[Enrollment, ...]:
    """What a registry row without explicit programs means: every device takes part in the market, and in peak
    shaving unless the (older) ``enrolled_peak_shaving`` flag says no."""
    return _DEFAULTS[bool(enrolled_peak_shaving)]


_INTERNED: dict[Any, tuple[Enrollment, ...]] = {}


def enrollments_from_json(items: Iterable[Mapping[str, Any]] | str | None, enrolled_peak_shaving: bool = True
                          ) -> tuple[Enrollment, ...]:
    """Enrollments of a ``programs`` jsonb value (or its text); identical ones are shared (a million devices, few
    distinct sets: the text of a common one is looked up, not parsed)."""
    if items is None:
        return _DEFAULTS[bool(enrolled_peak_shaving)]
    if isinstance(items, str):
        found = _INTERNED.get(items)
        if found is None:
            import json

            found = enrollments_from_json(json.loads(items))
            if len(_INTERNED) < 10_000:
                _INTERNED[items] = found
        return found
    key = tuple((i["program"], float(i.get("reserve_pct") or 0.0), i.get("from_ms"), i.get("to_ms")) for i in items)
    found = _INTERNED.get(key)
    if found is None:
        found = tuple(Enrollment(*k) for k in key)
        found = next((d for d in _DEFAULTS.values() if d == found), found)  # the defaults: one object each
        if len(_INTERNED) < 10_000:
            _INTERNED[key] = found
    return found


def enrollments_to_json(enrollments: Iterable[Enrollment]) -> list[dict[str, Any]]:
    out = []
    for e in enrollments:
        item: dict[str, Any] = {"program": e.program}
        if e.reserve_pct:
            item["reserve_pct"] = e.reserve_pct
        if e.from_ms is not None:
            item["from_ms"] = e.from_ms
        if e.to_ms is not None:
            item["to_ms"] = e.to_ms
        out.append(item)
    return out


def parse_programs_cell(cell: str) -> tuple[tuple[Enrollment, ...] | None, list[str]]:
    """The CSV ``programs`` cell: ``name[:reserve_pct]`` separated by ``;`` (``market;peak_shaving:20``)."""
    if not cell.strip():
        return None, []
    out: list[Enrollment] = []
    errors: list[str] = []
    for part in cell.split(";"):
        name, _, reserve = part.strip().partition(":")
        if not _PROGRAM_NAME.fullmatch(name):
            errors.append(f"program {name!r} must be a lowercase name like peak_shaving")
            continue
        try:
            pct = float(reserve) if reserve else 0.0
        except ValueError:
            errors.append(f"program {name!r}: reserve {reserve!r} is not a number")
            continue
        if not 0.0 <= pct <= 100.0:
            errors.append(f"program {name!r}: reserve {reserve!r} must be between 0 and 100")
            continue
        if any(e.program == name for e in out):
            errors.append(f"program {name!r} appears twice")
            continue
        out.append(Enrollment(name, pct))
    return tuple(out), errors


def programs_cell(enrollments: Iterable[Enrollment]) -> str:
    return ";".join(e.program + (f":{e.reserve_pct:g}" if e.reserve_pct else "") for e in enrollments)


def effective(enrollments: Iterable[Enrollment], ts_ms: int) -> dict[str, float]:
    """The programs a device takes part in at ``ts_ms``: program -> reserve held."""
    return {e.program: e.reserve_pct for e in enrollments if e.covers(ts_ms)}


def current(enrollments: Iterable[Enrollment], ts_ms: int) -> tuple[Enrollment, ...]:
    """The enrollments in force at ``ts_ms``, without their dates (what an export as of then says)."""
    return tuple(Enrollment(e.program, e.reserve_pct) for e in enrollments if e.covers(ts_ms))


def enroll(enrollments: tuple[Enrollment, ...], program: str, *, reserve_pct: float, from_ms: int,
           to_ms: int | None) -> tuple[Enrollment, ...]:
    """Add an enrollment from ``from_ms``; an open or overlapping one of the same program is ended at ``from_ms``."""
    if not _PROGRAM_NAME.fullmatch(program):
        raise UserError(f"program {program!r} must be a lowercase name like peak_shaving or market")
    if not 0.0 <= reserve_pct <= 100.0:
        raise UserError(f"reserve {reserve_pct:g} % must be between 0 and 100")
    if to_ms is not None and to_ms <= from_ms:
        raise UserError("the enrollment must end after it starts")
    kept = _ended(enrollments, program, from_ms)
    return kept + (Enrollment(program, float(reserve_pct), from_ms, to_ms),)


def unenroll(device_id: str, enrollments: tuple[Enrollment, ...], program: str, *, at_ms: int) -> tuple[Enrollment, ...]:
    """End the device's enrollment in ``program`` at ``at_ms``; a UserError when it is not enrolled then or later."""
    if not any(e.program == program and (e.to_ms is None or e.to_ms > at_ms) for e in enrollments):
        raise UserError(f"device {device_id!r} is not enrolled in {program!r} at or after that time; "
                        f"its programs: {programs_cell(enrollments) or 'none'}")
    return _ended(enrollments, program, at_ms)


def _ended(enrollments: tuple[Enrollment, ...], program: str, at_ms: int) -> tuple[Enrollment, ...]:
    out = []
    for e in enrollments:
        if e.program != program or (e.to_ms is not None and e.to_ms <= at_ms):
            out.append(e)
        elif e.from_ms is None or e.from_ms < at_ms:
            out.append(Enrollment(e.program, e.reserve_pct, e.from_ms, at_ms))
        # an enrollment that would only start at or after at_ms is dropped
    return tuple(out)


def change_events(old: Any | None, new: Any, at_ms: int, *, changed_by: str, reason: str) -> list[dict[str, Any]]:
    """The ``fleet.events`` records of one change of a device (``old`` None: it is new): ``device_registered``,
    ``device_moved`` (another region path), ``device_removed`` (decommissioned). Other changes make none."""
    detail = {"changed_by": changed_by, "reason": reason}

    def event(kind: str, node_path: str, **extra: str) -> dict[str, Any]:
        return {"event_id": event_id(kind, new.device_id, at_ms, node_path), "kind": kind, "subject": new.device_id,
                "node_path": node_path, "at": at_ms, "detail": {**detail, **extra}}

    out = []
    if old is None:
        extra = {"site_id": new.site_id, "status": new.status}
        if new.replaces:
            extra["replaces"] = new.replaces
        out.append(event("device_registered", new.node_path, **extra))
    elif old.region_path != new.region_path:
        out.append(event("device_moved", new.node_path, from_node_path=old.node_path, site_id=new.site_id))
    if new.status == "decommissioned" and (old is None or old.status != "decommissioned"):
        out.append(event("device_removed", new.node_path, site_id=new.site_id))
    return out
