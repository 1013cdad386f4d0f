"""The alerts the operators see, ack and silence: every query on ``alerts`` / ``alert_events`` in one place.

The alerts flow writes both tables; the API only reads them and records acks and silences, each in
one transaction (the alert row and an ``alert_events`` row, or neither).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["list_alerts", "get_alert", "ack_alert", "silence_alert", "alerts_changed_since"]

_COLUMNS = ("alert_id, rule, subject, node_path, state, severity, value, threshold, started_at, at, summary, "
            "acked_by, acked_at, silenced_until")


def list_alerts(dsn: str, state: str | None = None, *, limit: int = 200) -> list[dict[str, Any]]:
    query = f"SELECT {_COLUMNS} FROM alerts"
    params: list[Any] = []
    if state:
        query += " WHERE state = %s"
        params.append(state)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query + " ORDER BY at DESC LIMIT %s", [*params, limit]).fetchall()


def get_alert(dsn: str, alert_id: str) -> dict[str, Any] | None:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()


def _event(conn, alert_id: str, state: str, summary: str) -> None:
    conn.execute("INSERT INTO alert_events (alert_id, at, state, summary) VALUES (%s, clock_timestamp(), %s, %s) "
                 "ON CONFLICT DO NOTHING", (alert_id, state, summary))


def ack_alert(dsn: str, alert_id: str, user: str) -> dict[str, Any] | None:
    """Mark an alert acknowledged by ``user`` (None when there is no such alert)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        row = conn.execute(f"UPDATE alerts SET acked_by = %s, acked_at = now() WHERE alert_id = %s RETURNING {_COLUMNS}",
                           (user, alert_id)).fetchone()
        if row is not None:
            _event(conn, alert_id, "acked", f"acknowledged by {user}")
    return row


def silence_alert(dsn: str, alert_id: str, user: str, until: datetime) -> dict[str, Any] | None:
    """Silence an alert until ``until`` (None when there is no such alert)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        row = conn.execute(f"UPDATE alerts SET silenced_until = %s WHERE alert_id = %s RETURNING {_COLUMNS}",
                           (until, alert_id)).fetchone()
        if row is not None:
            _event(conn, alert_id, "silenced", f"silenced by {user} until {until.astimezone(timezone.utc).isoformat()}")
    return row


def alerts_changed_since(conn: psycopg.Connection, since: datetime) -> list[dict[str, Any]]:
    """Alerts whose row or events changed after ``since`` (for the live stream)."""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE at > %s OR acked_at > %s OR alert_id IN "
        "(SELECT alert_id FROM alert_events WHERE stored_at > %s) ORDER BY at", (since, since, since)).fetchall()
