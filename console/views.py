"""Small pure helpers shared by the API and the pages: rows as JSON, times from query strings."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping

from console.errors import ApiError

__all__ = ["jsonable_row", "parse_time_ms", "jsonable"]


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in row.items() if k != "updated_at"} | (
        {"updated_at": jsonable(row["updated_at"])} if "updated_at" in row else {})


def parse_time_ms(text: str, name: str) -> int:
    """Epoch milliseconds from epoch ms or an ISO-8601 time (UTC when no offset); 422 otherwise."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(422, f"{name!r} = {text!r} is neither epoch milliseconds nor an ISO-8601 time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        value = dt.timestamp() * 1000
        if value < 0:
            raise ApiError(422, f"{name!r} = {text!r} is before 1970")
        return int(value)
    if not math.isfinite(value) or not (0 <= value <= 253_402_300_799_000):
        raise ApiError(422, f"{name!r} = {text!r} is not a time between 1970 and 9999")
    return int(value)
