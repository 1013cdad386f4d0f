"""Reading whole topics, for dumps, the demo and tests.

Tansu (the local broker) answers ListOffsets with a wrong high watermark
(it counts record batches, not records: 1,000 records produced in one batch
report a high watermark of 1), so nothing here trusts
``get_watermark_offsets``. The end of a partition is librdkafka's
partition-EOF event, which comes from the fetch responses and is right.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from vpp.kafka_security import client_config

__all__ = ["iter_topic", "read_topic", "TopicCounter"]


def iter_topic(settings: Any, topic: str, *, timeout_s: float = 60.0) -> Iterator[Message]:
    """Every message now in ``topic``, partition by partition in offset order within each; stops at the end."""
    # log_level 2: librdkafka's per-attempt connection errors (a line every 50 ms while the broker is down) stay
    # quiet; every error that matters is raised here (and a broker that cannot be reached as a KafkaException).
    consumer = Consumer(client_config(settings, **{"group.id": "vpp-reader", "enable.auto.commit": False,
                                                   "enable.partition.eof": True, "log_level": 2}))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise LookupError(f"topic {topic} not found on {settings.broker}")
        parts = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        pending = set(parts)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out reading partitions {sorted(pending)} of {topic}")
            for msg in consumer.consume(1000, timeout=0.5):
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise RuntimeError(f"reading {topic}: {err}")
    finally:
        consumer.close()


def read_topic(settings: Any, topic: str, decode: Callable[[bytes], object] = bytes, **kwargs) -> list:
    return [decode(m.value()) for m in iter_topic(settings, topic, **kwargs)]


class TopicCounter:
    """Counts the messages of several topics as they arrive (from the beginning or from now)."""

    def __init__(self, settings: Any, topics: list[str], *, from_beginning: bool = False):
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

        self._consumer = Consumer(client_config(settings, **{"group.id": "vpp-counter", "enable.auto.commit": False}))
        meta = self._consumer.list_topics(timeout=10)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self._consumer.assign([TopicPartition(t, p, start) for t in topics if t in meta.topics
                               for p in meta.topics[t].partitions])
        self.counts = {t: 0 for t in topics}

    def poll(self, budget_s: float = 0.2) -> list[Message]:
        """Count what arrived (for at most ``budget_s``); returns those messages."""
        out: list[Message] = []
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            msgs = self._consumer.consume(5000, timeout=0.05)
            if not msgs:
                break
            for m in msgs:
                if m.error() is None:
                    self.counts[m.topic()] += 1
                    out.append(m)
        return out

    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        self._consumer.close()
