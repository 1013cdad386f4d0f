"""Dispatch commands to ``dispatch.commands``: the record (pure) and its delivery (Kafka).

Shared by ``vpp dispatch send`` and the operators' API (``POST /api/dispatch``): both refuse the same
commands with the same reasons (``UserError``) and produce the same Avro ``DispatchCommand``.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from vpp.errors import UserError

__all__ = ["command_record", "send_command", "node_power_limits"]


def command_record(node_path: str, target_w: float, minutes: float, *, start_ms: int, issued_by: str = "operator",
                   command_id: str | None = None, program: str | None = None) -> dict[str, Any]:
    """A ``dispatch.commands`` record for ``minutes`` from ``start_ms`` (pure)."""
    node = node_path.strip().strip("/")
    if not node:
        raise UserError("NODE_PATH is empty: name a node of the fleet tree, e.g. us/ca/pge")
    if not math.isfinite(target_w):
        raise UserError(f"--watts {target_w} is not a finite number (> 0 discharge, < 0 charge)")
    if not (minutes > 0 and math.isfinite(minutes)):
        raise UserError(f"--minutes {minutes} must be a positive number")
    from flows.dispatch_logic import MAX_COMMAND_PERIOD_MS

    if minutes * 60_000 > MAX_COMMAND_PERIOD_MS:
        raise UserError(f"--minutes {minutes:g} is longer than the {MAX_COMMAND_PERIOD_MS // 60_000:,} minutes "
                        f"({MAX_COMMAND_PERIOD_MS // 86_400_000} days) one command may cover")
    return {"command_id": command_id or f"cmd-{uuid.uuid4().hex[:12]}", "node_path": node, "target_w": float(target_w),
            "start": int(start_ms), "end": int(start_ms + round(minutes * 60_000)), "issued_by": issued_by,
            "program": program}


def send_command(settings, record: dict[str, Any], *, timeout_s: float = 30.0) -> None:
    """Produce one command and wait for the broker to acknowledge it."""
    from confluent_kafka import KafkaException, Producer

    from sinks.kafka import producer_config
    from vpp.serde import Serde

    topic = settings.topic("dispatch.commands")
    value = Serde.from_settings(settings).encode(topic, record)
    errors: list[str] = []
    producer = Producer({**producer_config(settings.broker), "log_level": 2})  # failures are raised below, not logged
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
