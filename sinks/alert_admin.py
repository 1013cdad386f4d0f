"""What operators do with stored alerts: list, show with history, acknowledge, silence (``vpp alerts`` and the
console's API), and what the demo and the console's live stream read of them.

An acknowledgement or a silence is recorded on the alert (``acked_by``, ``silenced_until``) and as a
row of its history (``alert_events``, with who did it). A silence of an identity ``(rule, subject)``
is kept in ``alert_silences``: it applies to the open alert of that identity and to any raised
before it ends. A silenced alert is still recorded; it is only not posted to the webhook.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = ["AlertNotFound", "list_alerts", "alert_with_history", "ack_alert", "silence_alert",
           "silence_identity", "alert_transitions", "alerts_changed_since"]

_COLUMNS = ("alert_id, rule, subject, node_path, state, severity, value, threshold, started_at, fired_at, ended_at, "
            "changed_at, summary, acked_by, acked_at, silenced_until, COALESCE(silenced_until > now(), false) AS silenced")


class AlertNotFound(LookupError):
    """No alert has this id."""


def list_alerts(dsn: str, state: str | None = None, *, node: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts, newest change first; ``node``: the node and everything under it; ``dropped`` ones only when asked."""
    node = node.strip().strip("/") if node else None
    query = (f"SELECT {_COLUMNS} FROM alerts WHERE "
             "(%(state)s::text IS NULL AND state <> 'dropped' OR state = %(state)s) "
             "AND (%(node)s::text IS NULL OR node_path = %(node)s OR node_path LIKE %(prefix)s) "
             "ORDER BY changed_at DESC, alert_id LIMIT %(limit)s")
    prefix = None if node is None else node.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, {"state": state, "node": node, "prefix": prefix, "limit": limit}).fetchall()


def alert_with_history(dsn: str, alert_id: str) -> dict[str, Any]:
    """One alert and its history (transitions, acknowledgements, silences) in order."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        row["history"] = conn.execute("SELECT kind, at, actor, detail FROM alert_events WHERE alert_id = %s ORDER BY id",
                                      (alert_id,)).fetchall()
    return row


def ack_alert(dsn: str, alert_id: str, by: str) -> dict[str, Any]:
    """Record that ``by`` acknowledged the alert (a second acknowledgement is recorded too; the latest shows):
    the alert row and its history row in one transaction. Returns the alert."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute(f"UPDATE alerts SET acked_by = %s, acked_at = now() WHERE alert_id = %s RETURNING {_COLUMNS}",
                           (by, alert_id)).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        conn.execute("INSERT INTO alert_events (alert_id, kind, at, actor) VALUES (%s, 'ack', now(), %s)", (alert_id, by))
    return row


def silence_alert(dsn: str, alert_id: str, by: str | None, until: datetime) -> dict[str, Any]:
    """Silence one alert until ``until`` (in one transaction with its history row). Returns the alert."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute(f"UPDATE alerts SET silenced_until = %s WHERE alert_id = %s RETURNING {_COLUMNS}",
                           (until, alert_id)).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        conn.execute("INSERT INTO alert_events (alert_id, kind, at, actor, detail) VALUES (%s, 'silence', now(), %s, %s)",
                     (alert_id, by, f"until {until.astimezone(timezone.utc).isoformat()}"))
    return row


def silence_identity(dsn: str, rule: str, subject: str, duration: timedelta, by: str | None) -> tuple[datetime, list[str]]:
    """Silence every alert of ``(rule, subject)`` for ``duration``, open or raised meanwhile; returns (until, open ids)."""
    until = datetime.now(timezone.utc) + duration
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO alert_silences (rule, subject, until, created_by) VALUES (%s, %s, %s, %s)",
                     (rule, subject, until, by))
        ids = [r[0] for r in conn.execute(
            "UPDATE alerts SET silenced_until = GREATEST(COALESCE(silenced_until, %s), %s) "
            "WHERE rule = %s AND subject = %s AND state IN ('pending', 'firing') RETURNING alert_id",
            (until, until, rule, subject))]
        for alert_id in ids:
            conn.execute("INSERT INTO alert_events (alert_id, kind, at, actor, detail) VALUES (%s, 'silence', now(), %s, %s)",
                         (alert_id, by, f"until {until.isoformat()} ({rule} {subject})"))
    return until, ids


def alert_transitions(dsn: str, since: datetime, states: tuple[str, ...] = ("firing", "resolved"),
                      limit: int = 500) -> list[dict[str, Any]]:
    """The transitions to ``states`` stored since ``since``, oldest first: ``at`` (event time), ``state``, the
    alert's ``rule``, ``subject``, ``node_path`` and ``summary``."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT e.at, e.kind AS state, a.rule, a.subject, a.node_path, e.detail AS summary "
            "FROM alert_events e JOIN alerts a USING (alert_id) WHERE e.kind = ANY(%s) AND e.recorded_at >= %s "
            "ORDER BY e.id LIMIT %s", (list(states), since, limit)).fetchall()


def alerts_changed_since(conn: psycopg.Connection, since: datetime) -> list[dict[str, Any]]:
    """Alerts whose row or history changed after ``since`` (for the console's live stream)."""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM alerts WHERE changed_at > %s OR stored_at > %s OR acked_at > %s OR alert_id IN "
        "(SELECT alert_id FROM alert_events WHERE recorded_at > %s) ORDER BY changed_at", (since, since, since, since)).fetchall()
