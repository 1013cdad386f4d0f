"""Producing a few records to a topic and waiting for the broker to acknowledge them: dispatch commands from the
CLI and the API (``sinks.dispatch_commands``), and the asset registry's events on ``fleet.events``
(``device_registered``, ``device_moved``, ``device_removed``; records of ``vpp.asset_lifecycle.change_events``)."""

from __future__ import annotations

import time
from typing import Any, Iterable

from vpp.errors import UserError

__all__ = ["produce_records", "publish_events"]


def produce_records(settings, topic_name: str, records: Iterable[dict[str, Any]], key_field: str, *,
                    timeout_s: float = 30.0) -> int:
    """Encode (Avro, the topic's schema) and produce each record keyed by ``record[key_field]``; wait for every
    acknowledgement. Raises a UserError naming the first failure."""
    from confluent_kafka import KafkaException, Producer

    from sinks.kafka import producer_config
    from vpp.serde import Serde

    records = list(records)
    if not records:
        return 0
    topic = settings.topic(topic_name)
    serde = Serde.from_settings(settings)
    errors: list[str] = []
    producer = Producer({**producer_config(settings), "log_level": 2})  # failures are raised below, not logged

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    now_ms = int(time.time() * 1000)
    for record in records:
        value = serde.encode(topic, record)
        while True:
            try:
                producer.produce(topic, value, str(record[key_field]), timestamp=now_ms, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                raise UserError(f"cannot send to {topic} on {settings.broker}: {exc}") from exc
    if producer.flush(timeout_s) or errors:
        raise UserError(f"{len(errors) or 'some'} record(s) not delivered to {topic} on {settings.broker} "
                        f"({errors[0] if errors else 'timed out'}); is the stack running (vpp up)?")
    return len(records)


def publish_events(settings, events: Iterable[dict[str, Any]], *, timeout_s: float = 30.0) -> int:
    """Publish ``fleet.events`` records (key: the subject) and wait until the broker has them all."""
    return produce_records(settings, "fleet.events", events, "subject", timeout_s=timeout_s)
