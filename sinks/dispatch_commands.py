"""Dispatch commands to ``dispatch.commands``: delivery (Kafka) and what a node's devices can do (PostgreSQL).

Shared by ``vpp dispatch send`` and the operators' API (``POST /api/dispatch``); the record itself and its
rules are ``vpp.commands.command_record``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["send_command", "node_power_limits"]


def send_command(settings, record: dict[str, Any], *, timeout_s: float = 30.0) -> None:
    """Produce one command and wait for the broker to acknowledge it."""
    from sinks.fleet_events import produce_records

    produce_records(settings, "dispatch.commands", [record], "node_path", timeout_s=timeout_s)


def node_power_limits(dsn: str, node_path: str) -> dict[str, float] | None:
    """What the devices registered under a node can do at most: ``{devices, max_discharge_w, max_charge_w}``.

    None when no registered device lies under the node (the node path, or a device ``path/device_id``).
    """
    import psycopg

    p = node_path.strip().strip("/")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(max_discharge_w), 0), coalesce(sum(max_charge_w), 0) FROM assets "
            "WHERE status <> 'decommissioned' AND (region_path = %s OR left(region_path, length(%s) + 1) = %s || '/' "
            "OR region_path || '/' || device_id = %s)", (p, p, p, p)).fetchone()
    if not row or row[0] == 0:
        return None
    return {"devices": int(row[0]), "max_discharge_w": float(row[1]), "max_charge_w": float(row[2])}
