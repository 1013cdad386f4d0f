"""The certificate table (``device_certificates``): every certificate the platform CA issued and its status.

Status is ``active``, ``superseded`` (a newer certificate of the same device was used: see
``supersede_older``) or ``revoked`` (``vpp pki revoke``). Rows are never deleted: the table is the
CA's issuance log as well as what the gateway checks at every handshake. ``updated_at`` moves
with every change, so a reader polls for ``updated_at > last seen`` (and an UPDATE also
NOTIFYs ``device_certificates_changed`` with the serial).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

__all__ = ["CertRow", "CERT_COLUMNS", "insert_certificates", "list_certificates", "revoke", "revoked_serials",
           "supersede_older", "SUPERSEDE_OLDER", "active_devices", "changed_since", "registered_devices"]

CERT_COLUMNS = ("serial", "device_id", "fingerprint_sha256", "not_before", "not_after", "status", "issued_at",
                "superseded_at", "revoked_at", "reason", "updated_at")
#: ``(serial, device_id)``: the device's active certificates issued before ``serial`` become superseded
SUPERSEDE_OLDER = (
    "UPDATE device_certificates AS old SET status = 'superseded', superseded_at = clock_timestamp(), "
    "updated_at = clock_timestamp() FROM device_certificates AS new "
    "WHERE new.serial = %s AND new.status = 'active' AND old.device_id = %s AND old.device_id = new.device_id "
    "AND old.status = 'active' AND old.serial <> new.serial AND old.issued_at < new.issued_at "
    "RETURNING old.serial, old.updated_at"
)
_SELECT = f"SELECT {', '.join(CERT_COLUMNS)} FROM device_certificates"


@dataclass(frozen=True)
class CertRow:
    serial: str
    device_id: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    status: str
    issued_at: datetime
    superseded_at: datetime | None
    revoked_at: datetime | None
    reason: str | None
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _rows(cur) -> list[CertRow]:
    return [CertRow(*r) for r in cur.fetchall()]


def insert_certificates(conn, rows: Sequence[tuple]) -> int:
    """Record issued certificates ``(serial, device_id, fingerprint, not_before, not_after)`` in one statement."""
    if not rows:
        return 0
    cols = [list(c) for c in zip(*rows)]
    conn.execute(
        "INSERT INTO device_certificates (serial, device_id, fingerprint_sha256, not_before, not_after) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])", cols)
    return len(rows)


def registered_devices(conn, device_ids: Iterable[str] | None = None) -> set[str]:
    """Device ids of the asset registry not decommissioned (all, or those of ``device_ids``)."""
    live = "status <> 'decommissioned'"  # a decommissioned device gets no certificate again (its id is retired)
    if device_ids is None:
        return {r[0] for r in conn.execute(f"SELECT device_id FROM assets WHERE {live}")}
    return {r[0] for r in conn.execute(f"SELECT device_id FROM assets WHERE device_id = ANY(%s) AND {live}",
                                       (list(device_ids),))}


def active_devices(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT device_id FROM device_certificates WHERE status = 'active'")}


def list_certificates(conn, device_id: str | None = None) -> list[CertRow]:
    with conn.cursor() as cur:
        if device_id is None:
            cur.execute(_SELECT + " ORDER BY device_id, issued_at")
        else:
            cur.execute(_SELECT + " WHERE device_id = %s ORDER BY issued_at", (device_id,))
        return _rows(cur)


def changed_since(conn, since: datetime | str) -> list[CertRow]:
    """Rows changed after ``since`` (10 s of overlap: a transaction may commit a row stamped a moment earlier)."""
    with conn.cursor() as cur:
        cur.execute(_SELECT + " WHERE updated_at > %s::timestamptz - interval '10 seconds' ORDER BY updated_at", (since,))
        return _rows(cur)


def revoke(conn, serial_or_device: str, reason: str | None) -> list[CertRow]:
    """Revoke one certificate (by serial) or every unrevoked one of a device; returns the rows revoked now."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE device_certificates SET status = 'revoked', revoked_at = clock_timestamp(), reason = %s, "
            "updated_at = clock_timestamp() WHERE (serial = lower(%s) OR device_id = %s) AND status <> 'revoked' "
            f"RETURNING {', '.join(CERT_COLUMNS)}", (reason, serial_or_device, serial_or_device))
        return _rows(cur)


def revoked_serials(conn) -> list[tuple[str, datetime]]:
    return list(conn.execute("SELECT serial, revoked_at FROM device_certificates WHERE status = 'revoked' ORDER BY revoked_at"))


def supersede_older(conn, device_id: str, serial: str) -> list[str]:
    """The device connected with ``serial``: its active certificates issued before it become superseded.

    Returns the serials superseded (none when ``serial`` is itself not active any more).
    """
    rows = conn.execute(SUPERSEDE_OLDER, (serial, device_id)).fetchall()  # (serial, updated_at)
    return [r[0] for r in rows]
