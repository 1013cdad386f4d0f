"""Is a local service alive and answering: process, HTTP, TCP, PostgreSQL and Kafka checks; stopping one."""

from __future__ import annotations

import os
import signal
import socket
import time

__all__ = ["_pid_alive", "_http_ok", "_tcp_ok", "_terminate", "_pg_ok", "_kafka_ok"]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    import httpx

    try:
        status = httpx.get(url, timeout=timeout).status_code
        return status == 200, f"HTTP {status}"
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", reported with its text
        return False, str(exc)


def _tcp_ok(hostport: str, timeout: float = 2.0) -> tuple[bool, str]:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True, "accepting connections"
    except OSError as exc:
        return False, str(exc)


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _pg_ok(dsn: str) -> tuple[bool, str]:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True, "accepting connections"
    except Exception as exc:  # noqa: BLE001
        return False, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _kafka_ok(broker: str) -> tuple[bool, str]:
    ok, detail = _tcp_ok(broker)
    if not ok:
        return ok, detail
    from confluent_kafka.admin import AdminClient

    try:
        meta = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=3)
        return True, f"{len(meta.topics)} topics"
    except Exception as exc:  # noqa: BLE001
        return False, str(exc)
