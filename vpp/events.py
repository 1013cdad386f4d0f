"""Fleet events (spec alerts.md section 1, topic ``fleet.events``): the record and its deterministic ids, shared
by every producer of events (the alerts flow, the device gateway) so that one fact always has one id.

A record is ``event_id, kind, subject, node_path, at, detail`` (``detail`` a small map of strings). The id is a
hash of what the event is: the same fact read or sent twice has the same id, and the stores keep it once.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

__all__ = ["stable_id", "event_id", "event_record"]


def stable_id(*parts: object) -> str:
    """A short hash of ``parts``: equal parts, equal id."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def event_id(kind: str, subject: str, at: int, *extra: object) -> str:
    """The id of an event: the same fact read twice has the same id."""
    return stable_id("event", kind, subject, at, *extra)


def event_record(kind: str, subject: str, node_path: str, at: int, detail: Mapping[str, Any], *id_extra: object,
                 id_at: int | None = None) -> dict[str, Any]:
    """A ``fleet.events`` record; its id from ``kind, subject, id_at (default at), id_extra``; detail values as strings."""
    return {"event_id": event_id(kind, subject, at if id_at is None else id_at, *id_extra), "kind": kind,
            "subject": subject, "node_path": node_path, "at": at,
            "detail": {k: v if isinstance(v, str) else str(v) for k, v in detail.items() if v is not None}}
