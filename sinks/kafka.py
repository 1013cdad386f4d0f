"""Kafka sink that keeps keys and reports delivery failures.

bytewax's own Kafka sink ignores the partition and sets no delivery callback,
so a failed delivery is silently lost (see BYTEWAX.md section 4). This sink
produces with the message key (partitioned by librdkafka's murmur2, the same
as Java clients), the record's timestamp, waits for every delivery of a batch
and raises if any failed: the step fails, the flow restarts from its last
snapshot, and at-least-once holds.
"""

from __future__ import annotations

from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaException, Producer

from sinks.messages import OutMessage
from vpp.kafka_security import client_config

__all__ = ["KafkaTopicSink", "producer_config"]


def producer_config(settings: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The platform's producer: the settings' broker and security (``vpp.kafka_security``), keyed, idempotent."""
    config = {
        **client_config(settings),
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    config.update(extra or {})
    return config


class _ProducerPartition(StatelessSinkPartition[OutMessage]):
    def __init__(self, config: dict[str, Any], flush_timeout_s: float):
        self._producer = Producer(config)
        self._flush_timeout_s = flush_timeout_s
        self._errors: list[str] = []

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err}")

    def write_batch(self, items: list[OutMessage]) -> None:
        produce = self._producer.produce
        for m in items:
            while True:
                try:
                    produce(m.topic, m.value, m.key, timestamp=m.timestamp_ms or 0, on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: serve callbacks and retry
                    self._producer.poll(0.1)
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} messages not delivered within {self._flush_timeout_s} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"{len(errors)} deliveries failed, first: {errors[0]}")

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_s)


class KafkaTopicSink(DynamicSink[OutMessage]):
    """One producer per worker; each OutMessage names its own topic."""

    def __init__(self, settings: Any, *, extra_config: dict[str, Any] | None = None, flush_timeout_s: float = 30.0):
        self._config = producer_config(settings, extra_config)
        self._flush_timeout_s = flush_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self._config, self._flush_timeout_s)
