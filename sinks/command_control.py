"""The command-and-control store: every dispatch command, device set point and status in PostgreSQL.

Written by a sink inside the dispatch flow (``flows.dispatch.flow``), from the same records it puts on
``device.commands`` and ``dispatch.status``: one place decides, and what the store holds is what
the devices were told. Every write is an upsert keyed by the record's identity, so the copies an
at-least-once restart re-produces are absorbed:

- ``dispatch_commands`` by ``command_id`` (the first copy is kept: a resent id is the same command);
- ``device_setpoints`` by ``(command_id, device_id, start_at)``;
- ``dispatch_statuses`` by ``(command_id, at, state)`` (two re-allocations at the same instant
  keep the later one).

Rows go in as arrays through ``unnest`` (one statement per table per batch): a re-allocation of a
100,000-device node is one round trip, not 100,000.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sinks.postgres import PostgresBatchSink

__all__ = ["CommandControlSink", "control_rows", "UPSERTS", "show_command", "recent_commands"]

UPSERTS: Mapping[str, str] = {
    "command": """
        INSERT INTO dispatch_commands (command_id, node_path, target_w, start_at, end_at, issued_by, program, received_at)
        SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::timestamptz[], %s::timestamptz[], %s::text[],
                             %s::text[], %s::timestamptz[])
        ON CONFLICT (command_id) DO NOTHING
    """,
    "setpoint": """
        INSERT INTO device_setpoints (command_id, device_id, start_at, end_at, node_path, setpoint_w)
        SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::float8[])
        ON CONFLICT (command_id, device_id, start_at) DO UPDATE
            SET end_at = EXCLUDED.end_at, setpoint_w = EXCLUDED.setpoint_w, stored_at = now()
    """,
    "status": """
        INSERT INTO dispatch_statuses (command_id, at, state, node_path, requested_w, allocated_w, shortfall_w, devices, reason)
        SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::float8[], %s::float8[],
                             %s::float8[], %s::int[], %s::text[])
        ON CONFLICT (command_id, at, state) DO UPDATE
            SET requested_w = EXCLUDED.requested_w, allocated_w = EXCLUDED.allocated_w,
                shortfall_w = EXCLUDED.shortfall_w, devices = EXCLUDED.devices, reason = EXCLUDED.reason, stored_at = now()
    """,
}


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, timezone.utc)


def _period_ts(ms: int | None) -> datetime | None:
    """A command's start or end; None (stored as NULL) for a time no datetime holds (beyond the year 9999).

    Only a command the flow rejects can have one (``validate_command`` bounds the period); its status says
    why, with the original numbers, and the record itself stays on ``dispatch.commands``.
    """
    try:
        return _ts(ms)
    except (ValueError, OverflowError, OSError):
        return None


def _row(kind: str, r: Mapping[str, Any]) -> tuple:
    if kind == "command":
        return (r["command_id"], r["node_path"], float(r["target_w"]), _period_ts(r["start"]), _period_ts(r["end"]),
                r.get("issued_by") or "", r.get("program"), _ts(r.get("received_at")))
    if kind == "setpoint":
        return (r["command_id"], r["device_id"], _ts(r["start"]), _ts(r["end"]), r["node_path"], float(r["setpoint_w"]))
    if kind == "status":
        return (r["command_id"], _ts(r["at"]), r["state"], r["node_path"], float(r["requested_w"]), float(r["allocated_w"]),
                float(r["shortfall_w"]), int(r["devices"]), r.get("reason"))
    raise ValueError(f"unknown command-and-control record kind {kind!r}; expected command, setpoint or status")


def control_rows(items: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, list[list]]:
    """Column arrays per table, later copies of the same key replacing earlier ones within a batch (pure).

    One ``INSERT ... ON CONFLICT`` cannot touch the same row twice, so duplicates are folded here.
    """
    keyed: dict[str, dict[tuple, tuple]] = {"command": {}, "setpoint": {}, "status": {}}
    for kind, record in items:
        row = _row(kind, record)
        key = row[:1] if kind == "command" else row[:3]
        if kind == "command" and key in keyed[kind]:
            continue  # the first copy of a command is kept
        keyed[kind][key] = row
    return {kind: [list(col) for col in zip(*rows.values())] for kind, rows in keyed.items() if rows}


def write_control(cur, items: list[tuple[str, Mapping[str, Any]]]) -> None:
    columns = control_rows(items)
    for kind in ("command", "status", "setpoint"):
        if kind in columns:
            cur.execute(UPSERTS[kind], columns[kind])


class CommandControlSink(PostgresBatchSink[tuple[str, Mapping[str, Any]]]):
    """``(kind, record)`` items (kind: command, setpoint, status) upserted into PostgreSQL."""

    def __init__(self, dsn: str):
        super().__init__(dsn, write_control)


def show_command(dsn: str, command_id: str) -> dict[str, Any] | None:
    """A command with its statuses (in time order) and the latest set point per device with its ack, or None."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        command = conn.execute("SELECT * FROM dispatch_commands WHERE command_id = %s", (command_id,)).fetchone()
        if command is None:
            return None
        statuses = conn.execute("SELECT at, state, requested_w, allocated_w, shortfall_w, devices, reason "
                                "FROM dispatch_statuses WHERE command_id = %s ORDER BY at, stored_at", (command_id,)).fetchall()
        # with the device's answer through the gateway (device_command_acks, same key), when it gave one
        setpoints = conn.execute(
            "SELECT DISTINCT ON (s.device_id) s.device_id, s.setpoint_w, s.start_at, s.end_at, "
            "a.status AS ack_status, a.reason AS ack_reason, a.acked_at FROM device_setpoints s "
            "LEFT JOIN device_command_acks a ON (a.command_id, a.device_id, a.start_at) = (s.command_id, s.device_id, s.start_at) "
            "WHERE s.command_id = %s ORDER BY s.device_id, s.start_at DESC", (command_id,)).fetchall()
        count = conn.execute("SELECT count(*) AS n FROM device_setpoints WHERE command_id = %s", (command_id,)).fetchone()
    acked = sum(1 for p in setpoints if p["ack_status"] == "applied")
    return {"command": command, "statuses": statuses, "latest_setpoints": setpoints, "setpoint_rows": count["n"],
            "devices_applied": acked}


def recent_commands(dsn: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest commands with their latest status (None until the dispatch flow decided)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT c.command_id, c.node_path, c.target_w, c.start_at, c.end_at, c.issued_by, c.stored_at, "
            "s.state, s.allocated_w, s.shortfall_w, s.devices, s.reason FROM dispatch_commands c "
            "LEFT JOIN LATERAL (SELECT state, allocated_w, shortfall_w, devices, reason FROM dispatch_statuses "
            "WHERE command_id = c.command_id ORDER BY at DESC, stored_at DESC LIMIT 1) s ON true "
            "ORDER BY c.stored_at DESC LIMIT %s", (limit,)).fetchall()
