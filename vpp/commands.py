"""Dispatch commands as the platform issues them (operators, peak shaving, the autobidder): one record builder.

A ``dispatch.commands`` record (spec fleet.md section 2) covers ``[start, end)`` in epoch ms. The limits here
are the dispatch flow's own: a command longer than ``MAX_COMMAND_PERIOD_MS`` or starting more than
``MAX_COMMAND_LEAD_MS`` ahead is rejected there, so no issuer should build one.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from vpp.errors import UserError

__all__ = ["MAX_COMMAND_PERIOD_MS", "MAX_COMMAND_LEAD_MS", "InvalidCommand", "command_record"]

#: The longest period one command may cover, and how far ahead it may start. A fleet is dispatched for
#: minutes to hours; a period beyond these is a mistake in the command (an end in the year 1,903,351
#: once stopped the flow, since no store can hold that time), and an operator re-issues longer ones.
MAX_COMMAND_PERIOD_MS = 7 * 86_400_000
MAX_COMMAND_LEAD_MS = 31 * 86_400_000


class InvalidCommand(UserError):
    """A command that cannot be issued; ``field`` names the input at fault (``node_path``, ``target_w``, ``minutes``)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.reason = message


def command_record(node_path: str, target_w: float, minutes: float, *, start_ms: int, issued_by: str = "operator",
                   command_id: str | None = None, program: str | None = None) -> dict[str, Any]:
    """A ``dispatch.commands`` record for ``minutes`` from ``start_ms`` (pure but for a fresh id when none is given)."""
    node = node_path.strip().strip("/")
    if not node:
        raise InvalidCommand("node_path", "node path is empty: name a node of the fleet tree, e.g. us/ca/pge")
    if not math.isfinite(target_w):
        raise InvalidCommand("target_w", f"{target_w} is not a finite number of watts (> 0 discharge, < 0 charge)")
    if not (minutes > 0 and math.isfinite(minutes)):
        raise InvalidCommand("minutes", f"{minutes} must be a positive number of minutes")
    if minutes * 60_000 > MAX_COMMAND_PERIOD_MS:
        raise InvalidCommand("minutes", f"{minutes:g} is longer than the {MAX_COMMAND_PERIOD_MS // 60_000:,} minutes "
                                        f"({MAX_COMMAND_PERIOD_MS // 86_400_000} days) one command may cover")
    return {"command_id": command_id or f"cmd-{uuid.uuid4().hex[:12]}", "node_path": node, "target_w": float(target_w),
            "start": int(start_ms), "end": int(start_ms + round(minutes * 60_000)), "issued_by": issued_by,
            "program": program}
