"""A dispatch command as ``dispatch.commands`` carries it, and the rules every issuer checks first (pure).

Shared by ``vpp dispatch send``, the operators' API (``POST /api/dispatch``) and the autobidder: all
refuse the same commands with the same reasons (``UserError``). ``MAX_COMMAND_PERIOD_MS`` is also the
dispatch flow's own bound (``flows.dispatch_logic.validate_command``).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from vpp.errors import UserError

__all__ = ["MAX_COMMAND_PERIOD_MS", "command_record"]

#: The longest period one command may cover (7 days).
MAX_COMMAND_PERIOD_MS = 7 * 86_400_000


def command_record(node_path: str, target_w: float, minutes: float, *, start_ms: int, issued_by: str = "operator",
                   command_id: str | None = None, program: str | None = None) -> dict[str, Any]:
    """A ``dispatch.commands`` record for ``minutes`` from ``start_ms`` (pure)."""
    node = node_path.strip().strip("/")
    if not node:
        raise UserError("NODE_PATH is empty: name a node of the fleet tree, e.g. us/ca/pge")
    if not math.isfinite(target_w):
        raise UserError(f"--watts {target_w} is not a finite number (> 0 discharge, < 0 charge)")
    if not (minutes > 0 and math.isfinite(minutes)):
        raise UserError(f"--minutes {minutes} must be a positive number")
    if minutes * 60_000 > MAX_COMMAND_PERIOD_MS:
        raise UserError(f"--minutes {minutes:g} is longer than the {MAX_COMMAND_PERIOD_MS // 60_000:,} minutes "
                        f"({MAX_COMMAND_PERIOD_MS // 86_400_000} days) one command may cover")
    return {"command_id": command_id or f"cmd-{uuid.uuid4().hex[:12]}", "node_path": node, "target_w": float(target_w),
            "start": int(start_ms), "end": int(start_ms + round(minutes * 60_000)), "issued_by": issued_by,
            "program": program}
