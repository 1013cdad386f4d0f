"""Dispatch commands to ``dispatch.commands``: delivery (Kafka) and what a node's devices can do (PostgreSQL).

Shared by ``vpp dispatch send`` and the operators' API (``POST /api/dispatch``); the record itself and its
rules are ``vpp.commands.command_record``.
"""

from __future__ import annotations

import time
from typing import Any

from vpp.errors import UserError

__all__ = ["send_command", "node_power_limits"]


def send_command(settings, record: dict[str, Any], *, timeout_s: float = 30.0) -> None:
    """Produce one command and wait for the broker to acknowledge it."""
    from confluent_kafka import KafkaException, Producer

    from sinks.kafka import producer_config
    from vpp.serde import Serde

    topic = settings.topic("dispatch.commands")
    value = Serde.from_settings(settings).encode(topic, record)
    errors: list[str] = []
    producer = Producer({**producer_config(settings), "log_level": 2})  # failures are raised below, not logged
    try:
        producer.produce(topic, value, record["node_path"], timestamp=int(time.time() * 1000),
                         on_delivery=lambda err, _msg: errors.append(str(err)) if err is not None else None)
    except KafkaException as exc:
        raise UserError(f"cannot send to {topic} on {settings.broker}: {exc}") from exc
    if producer.flush(timeout_s) or errors:
        raise UserError(f"command not delivered to {topic} on {settings.broker} ({errors[0] if errors else 'timed out'}); "
                        "is the stack running (vpp up)?")


def node_power_limits(dsn: str, node_path: str) -> dict[str, float] | None:
    """What the devices registered under a node can do at most: ``{devices, max_discharge_w, max_charge_w}``.

    None when no registered device lies under the node (the node path, or a device ``path/device_id``).
    """
    import psycopg

    p = node_path.strip().strip("/")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(max_discharge_w), 0), coalesce(sum(max_charge_w), 0) FROM assets "
            "WHERE region_path = %s OR left(region_path, length(%s) + 1) = %s || '/' "
            "OR region_path || '/' || device_id = %s", (p, p, p, p)).fetchone()
    if not row or row[0] == 0:
        return None
    return {"devices": int(row[0]), "max_discharge_w": float(row[1]), "max_charge_w": float(row[2])}
