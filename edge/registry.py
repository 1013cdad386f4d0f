"""The gateway's view of PostgreSQL: the certificate table, the asset registry, sessions and command acks.

The certificate table and the registered device ids are cached in memory and refreshed every
``refresh_s`` (default 1 s) by polling ``updated_at`` (rows changed since the last poll), as
``sinks.asset_cache`` does: it needs no long-lived LISTEN connection and recovers by itself after a
database restart. A revocation therefore reaches the cache within ``refresh_s`` plus one query,
and ``on_change`` lets the gateway close the sessions it no longer admits. A serial the cache
does not know (issued a moment ago) is looked up in the table at its handshake.

``ready`` is False until the first full load: the gateway then closes new sessions with 1013.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import psycopg

from sinks.certificates import CERT_COLUMNS, SUPERSEDE_OLDER, CertRow

__all__ = ["EdgeRegistry"]

_log = logging.getLogger(__name__)
_CERTS = f"SELECT {', '.join(CERT_COLUMNS)} FROM device_certificates"
_ASSETS_SINCE = ("SELECT device_id, region_path, updated_at FROM assets "
                 "WHERE updated_at > %s::timestamptz - interval '10 seconds' ORDER BY updated_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EdgeRegistry:
    def __init__(self, dsn: str, *, refresh_s: float = 1.0, gateway: str = "gateway"):
        self._dsn, self._refresh_s, self.gateway = dsn, refresh_s, gateway
        self.certs: dict[str, CertRow] = {}
        self.devices: dict[str, str] = {}  # registered device id -> its region path (the node of its events)
        self.ready = False
        self._certs_since: datetime = _EPOCH
        self._assets_since: datetime = _EPOCH
        # two connections (a connection runs one statement at a time): admission (the refresh, lookups, the
        # supersede at a handshake) never queues behind the bookkeeping of sessions and acks, whose commits wait
        # for the WAL to reach the disk (a handshake once timed out behind them on a machine busy writing)
        self._conns: dict[str, psycopg.AsyncConnection] = {}

    async def _connection(self, role: str = "admission") -> psycopg.AsyncConnection:
        conn = self._conns.get(role)
        if conn is None or conn.closed:
            conn = self._conns[role] = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        return conn

    async def refresh(self) -> list[CertRow]:
        """Load what changed since the last refresh; returns the certificate rows that changed."""
        conn = await self._connection()
        cur = await conn.execute(_CERTS + " WHERE updated_at > %s::timestamptz - interval '10 seconds' ORDER BY updated_at",
                                 (self._certs_since,))
        changed = [CertRow(*r) for r in await cur.fetchall()]
        for row in changed:
            self._keep(row)
            self._certs_since = max(self._certs_since, row.updated_at)
        cur = await conn.execute(_ASSETS_SINCE, (self._assets_since,))
        for device_id, region_path, updated_at in await cur.fetchall():
            self.devices[device_id] = region_path
            self._assets_since = max(self._assets_since, updated_at)
        self.ready = True
        return changed

    async def run(self, on_change: Callable[[list[CertRow]], Awaitable[None]]) -> None:
        """Refresh forever; a failed refresh keeps the cache and is retried (the gateway keeps serving)."""
        while True:
            try:
                changed = await self.refresh()
                if changed:
                    await on_change(changed)
            except (psycopg.Error, OSError) as exc:
                _log.warning("certificate/asset refresh failed, serving the cached copy: %s", exc)
                self._conns.pop("admission", None)
            await asyncio.sleep(self._refresh_s)

    async def lookup(self, serial: str) -> CertRow | None:
        """The table's row of ``serial`` (the cache first; the database for one issued since the last refresh)."""
        row = self.certs.get(serial)
        if row is not None:
            return row
        conn = await self._connection()
        cur = await conn.execute(_CERTS + " WHERE serial = %s", (serial,))
        found = await cur.fetchone()
        if found is None:
            return None
        return self._keep(CertRow(*found))

    def _keep(self, row: CertRow) -> CertRow:
        """Cache ``row`` unless the cache has a newer version of it (a read that began before a change, e.g. a
        handshake's lookup racing another handshake's supersede, is older); returns the cached version."""
        cached = self.certs.get(row.serial)
        if cached is None or row.updated_at >= cached.updated_at:
            self.certs[row.serial] = cached = row
        return cached

    async def is_registered(self, device_id: str) -> bool:
        if device_id in self.devices:
            return True
        conn = await self._connection()
        cur = await conn.execute("SELECT region_path FROM assets WHERE device_id = %s", (device_id,))
        found = await cur.fetchone()
        if found is None:
            return False
        self.devices[device_id] = found[0]
        return True

    async def supersede_older(self, device_id: str, serial: str) -> list[str]:
        """The device used ``serial``: its earlier active certificates become superseded (see sinks.certificates)."""
        conn = await self._connection()
        cur = await conn.execute(SUPERSEDE_OLDER, (serial, device_id))
        superseded = await cur.fetchall()
        for s, updated_at in superseded:
            old = self.certs.get(s)
            if old is not None:
                self.certs[s] = CertRow(**{**old.__dict__, "status": "superseded", "updated_at": updated_at})
        return [s for s, _ in superseded]

    # -- sessions and acks ------------------------------------------------------------
    async def open_session(self, device_id: str, serial: str, remote: str) -> int:
        conn = await self._connection("bookkeeping")
        cur = await conn.execute("INSERT INTO gateway_sessions (device_id, cert_serial, gateway, remote) "
                                 "VALUES (%s, %s, %s, %s) RETURNING id", (device_id, serial, self.gateway, remote))
        return (await cur.fetchone())[0]

    async def close_session(self, session_id: int, code: int | None, reason: str | None) -> None:
        conn = await self._connection("bookkeeping")
        await conn.execute("UPDATE gateway_sessions SET disconnected_at = now(), close_code = %s, close_reason = %s "
                           "WHERE id = %s", (code, reason, session_id))

    async def record_ack(self, record: dict[str, Any]) -> None:
        """A device's command ack next to its set point (keyed as ``device_setpoints``); the last answer wins."""
        conn = await self._connection("bookkeeping")
        await conn.execute(
            "INSERT INTO device_command_acks (command_id, device_id, start_at, status, reason, acked_at, cert_serial) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (command_id, device_id, start_at) DO UPDATE "
            "SET status = EXCLUDED.status, reason = EXCLUDED.reason, acked_at = EXCLUDED.acked_at, "
            "cert_serial = EXCLUDED.cert_serial, stored_at = now()",
            (record["command_id"], record["device_id"], _ts(record["start"]), record["status"], record["reason"],
             _ts(record["acked_at"]), record["cert_serial"]))

    async def current_setpoint(self, device_id: str, now_ms: int) -> dict[str, Any] | None:
        """The set point the device must follow now, from the command-and-control store (None: none)."""
        conn = await self._connection("bookkeeping")
        cur = await conn.execute(
            "SELECT command_id, device_id, node_path, setpoint_w, start_at, end_at FROM device_setpoints "
            "WHERE device_id = %s AND start_at <= %s AND end_at > %s ORDER BY start_at DESC, stored_at DESC LIMIT 1",
            (device_id, _ts(now_ms), _ts(now_ms)))
        row = await cur.fetchone()
        if row is None:
            return None
        return {"command_id": row[0], "device_id": row[1], "node_path": row[2], "setpoint_w": row[3],
                "start": int(row[4].timestamp() * 1000), "end": int(row[5].timestamp() * 1000)}

    async def close(self) -> None:
        for conn in self._conns.values():
            await conn.close()


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, timezone.utc)

