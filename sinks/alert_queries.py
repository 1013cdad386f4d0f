"""The alerts the operators see, ack and silence: every query of the console on ``alerts`` / ``alert_events``.

The alerts flow writes both tables (migration ``070_alerts``; ``080_operator`` creates the same ones if it
runs first). The console only reads them and records acks and silences, each in one transaction: the alert
row and its ``alert_events`` row (kind ``ack`` or ``silence``, with who did it), or neither.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["ALERT_STATES", "list_alerts", "ack_alert", "silence_alert", "alerts_changed_since"]

ALERT_STATES = ("pending", "firing", "resolved", "dropped")
_COLUMNS = ("alert_id, rule, subject, node_path, state, severity, value, threshold, started_at, fired_at, ended_at, "
            "changed_at, summary, acked_by, acked_at, silenced_until, COALESCE(silenced_until > now(), false) AS silenced")


def list_alerts(dsn: str, state: str | None = None, *, limit: int = 200) -> list[dict[str, Any]]:
    """Alerts, newest change first; ``dropped`` ones (never fired) only when asked for."""
    query = (f"SELECT {_COLUMNS} FROM alerts WHERE (%(state)s::text IS NULL AND state <> 'dropped' OR state = %(state)s) "
             "ORDER BY changed_at DESC, alert_id LIMIT %(limit)s")
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, {"state": state, "limit": limit}).fetchall()


def ack_alert(dsn: str, alert_id: str, user: str) -> dict[str, Any] | None:
    """Mark an alert acknowledged by ``user`` (None when there is no such alert)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        row = conn.execute(f"UPDATE alerts SET acked_by = %s, acked_at = now() WHERE alert_id = %s RETURNING {_COLUMNS}",
                           (user, alert_id)).fetchone()
        if row is not None:
            conn.execute("INSERT INTO alert_events (alert_id, kind, at, actor) VALUES (%s, 'ack', now(), %s)",
                         (alert_id, user))
    return row


def silence_alert(dsn: str, alert_id: str, user: str, until: datetime) -> dict[str, Any] | None:
    """Silence an alert until ``until`` (None when there is no such alert)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        row = conn.execute(f"UPDATE alerts SET silenced_until = %s WHERE alert_id = %s RETURNING {_COLUMNS}",
                           (until, alert_id)).fetchone()
        if row is not None:
            conn.execute("INSERT INTO alert_events (alert_id, kind, at, actor, detail) VALUES (%s, 'silence', now(), %s, %s)",
                         (alert_id, user, f"until {until.astimezone(timezone.utc).isoformat()}"))
    return row


def alerts_changed_since(conn: psycopg.Connection, since: datetime) -> list[dict[str, Any]]:
    """Alerts whose row or history changed after ``since`` (for the live stream)."""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE changed_at > %s OR stored_at > %s OR acked_at > %s OR alert_id IN "
        "(SELECT alert_id FROM alert_events WHERE recorded_at > %s) ORDER BY changed_at", (since, since, since, since)).fetchall()
