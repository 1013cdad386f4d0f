"""PostgreSQL store of alerts and events (tables ``alerts``, ``alert_events``, ``events``; migration 070).

Idempotent, as at-least-once delivery needs: an alert is one row keyed by ``alert_id`` whose state
only moves forward (pending < firing < resolved | dropped), a transition is one ``alert_events``
row per (alert, state), an event one ``events`` row per ``event_id``. The same record written twice
changes nothing and is not reported as new.

``write`` returns the transitions that were new, each with whether its alert is silenced (by id, or
by a silence of its identity ``(rule, subject)``): the caller calls the webhook for those only, so a
replay never notifies twice.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from psycopg.types.json import Jsonb

__all__ = ["STATE_RANK", "alert_row", "event_row", "AlertStore", "ms_to_datetime"]

STATE_RANK = {"pending": 1, "firing": 2, "resolved": 3, "dropped": 3}

_UPSERT_ALERT = """
INSERT INTO alerts (alert_id, rule, subject, node_path, state, state_rank, severity, value, threshold, started_at,
                    fired_at, ended_at, changed_at, summary, silenced_until)
VALUES (%(alert_id)s, %(rule)s, %(subject)s, %(node_path)s, %(state)s, %(state_rank)s, %(severity)s, %(value)s,
        %(threshold)s, %(started_at)s, %(fired_at)s, %(ended_at)s, %(at)s, %(summary)s,
        (SELECT max(until) FROM alert_silences s WHERE s.rule = %(rule)s AND s.subject = %(subject)s AND s.until > now()))
ON CONFLICT (alert_id) DO UPDATE SET
    state = EXCLUDED.state, state_rank = EXCLUDED.state_rank, value = EXCLUDED.value, threshold = EXCLUDED.threshold,
    fired_at = COALESCE(alerts.fired_at, EXCLUDED.fired_at), ended_at = EXCLUDED.ended_at,
    changed_at = EXCLUDED.changed_at, summary = EXCLUDED.summary
WHERE alerts.state_rank < EXCLUDED.state_rank
"""

_INSERT_TRANSITION = """
INSERT INTO alert_events (alert_id, kind, at, detail) VALUES (%(alert_id)s, %(state)s, %(at)s, %(summary)s)
ON CONFLICT (alert_id, kind) WHERE kind IN ('pending', 'firing', 'resolved', 'dropped') DO NOTHING
RETURNING (SELECT COALESCE(a.silenced_until > now(), false) FROM alerts a WHERE a.alert_id = %(alert_id)s)
"""

_INSERT_EVENT = """
INSERT INTO events (event_id, kind, subject, node_path, at, detail)
VALUES (%(event_id)s, %(kind)s, %(subject)s, %(node_path)s, %(at)s, %(detail)s)
ON CONFLICT (event_id) DO NOTHING
"""


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def alert_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters of the ``alerts`` upsert and the transition insert for one ``fleet.alerts`` record (pure)."""
    at = ms_to_datetime(rec["at"])
    state = rec["state"]
    return {**rec, "state_rank": STATE_RANK[state], "started_at": ms_to_datetime(rec["started_at"]), "at": at,
            "fired_at": at if state == "firing" else None, "ended_at": at if STATE_RANK[state] == 3 else None}


def event_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters of the ``events`` insert for one ``fleet.events`` record (pure)."""
    return {**rec, "at": ms_to_datetime(rec["at"]), "detail": Jsonb(dict(rec.get("detail") or {}))}


class AlertStore:
    """One connection; ``write`` stores a batch of ``("alert" | "event", record)`` in one transaction."""

    def __init__(self, dsn: str):
        import psycopg

        self._conn = psycopg.connect(dsn, autocommit=False)

    def write(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[dict[str, Any], bool]]:
        """Store the batch; returns ``(alert record, silenced)`` of each transition stored for the first time."""
        new: list[tuple[dict[str, Any], bool]] = []
        events = []
        with self._conn.cursor() as cur:
            for kind, rec in items:
                if kind == "event":
                    events.append(event_row(rec))
                    continue
                row = alert_row(rec)
                cur.execute(_UPSERT_ALERT, row)
                cur.execute(_INSERT_TRANSITION, row)
                found = cur.fetchone()
                if found is not None:
                    new.append((dict(rec), bool(found[0])))
            if events:
                cur.executemany(_INSERT_EVENT, events)
        self._conn.commit()
        return new

    def close(self) -> None:
        self._conn.close()
