"""The gateway's Kafka side: a producer whose deliveries are awaitable, and a follower of ``device.commands``.

``DeliveryProducer.produce(messages)`` produces with the idempotent producer (acks=all,
``sinks.kafka.producer_config``) and returns a future resolved on the event loop once every
delivery callback of those messages ran, with the list of errors (empty: all confirmed). A poll
thread serves the callbacks. When librdkafka's local queue is full, ``send`` waits (it does not
buffer beyond it) and ``room`` is cleared, so the gateway stops reading every socket until the
queue has drained below half.

``CommandFollower`` reads every partition of ``device.commands`` from the end as of its start
(explicit offsets from the watermarks, no consumer group: every gateway process sees every set
point and keeps only those of devices it holds), decodes them and hands them to the loop in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Sequence

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from sinks.kafka import producer_config
from sinks.messages import OutMessage

__all__ = ["DeliveryProducer", "CommandFollower"]

_log = logging.getLogger(__name__)
_QUEUE_MAX = 100_000


class _Batch:
    __slots__ = ("remaining", "errors", "future", "loop")

    def __init__(self, n: int, future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.remaining, self.errors, self.future, self.loop = n, [], future, loop

    def on_delivery(self, err, msg) -> None:  # librdkafka's poll thread
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}" if msg is not None else err.str())
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(list(self.errors))


class _Failed:
    def __init__(self, text: str):
        self._text = text

    def str(self) -> str:
        return self._text


class DeliveryProducer:
    def __init__(self, settings: Any, loop: asyncio.AbstractEventLoop, *, extra: dict[str, Any] | None = None,
                 queue_max: int = _QUEUE_MAX):
        config = producer_config(settings, {"queue.buffering.max.messages": queue_max, **(extra or {})})
        self._producer = Producer(config)
        self._loop = loop
        self._low_water = queue_max // 2
        self.room = asyncio.Event()
        self.room.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="gateway-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def produce(self, messages: Sequence[OutMessage]) -> asyncio.Future:
        """Produce ``messages`` in order (waiting while the local queue is full); returns a future of their errors.

        The future resolves once every delivery callback ran: an empty list means the broker confirmed all.
        """
        future = self._loop.create_future()
        if not messages:
            future.set_result([])
            return future
        batch = _Batch(len(messages), future, self._loop)
        produce = self._producer.produce
        for m in messages:
            while True:
                try:
                    produce(m.topic, m.value, m.key, on_delivery=batch.on_delivery)
                    break
                except BufferError:
                    await self._wait_for_room()
                except KafkaException as exc:  # e.g. an unknown topic: nothing will call back for this one
                    batch.on_delivery(_Failed(f"{m.topic}: {exc}"), None)
                    break
        return future

    async def _wait_for_room(self) -> None:
        self.room.clear()
        while len(self._producer) > self._low_water:
            await asyncio.sleep(0.01)
        self.room.set()

    def queued(self) -> int:
        return len(self._producer)

    def close(self, timeout_s: float = 10.0) -> int:
        self._stop.set()
        self._thread.join()
        return self._producer.flush(timeout_s)


class CommandFollower:
    """A thread reading ``topic`` from its end; ``on_record(record)`` runs on the loop for each decoded record."""

    def __init__(self, settings: Any, topic: str, decode: Callable[[bytes], dict], loop: asyncio.AbstractEventLoop,
                 on_record: Callable[[dict], None]):
        from vpp.kafka_security import client_config

        brokers = settings.broker
        self._consumer = Consumer({**client_config(settings), "group.id": "vpp-gateway", "enable.auto.commit": False,
                                   "enable.partition.eof": False})
        md = self._consumer.list_topics(topic=topic, timeout=10)
        found = md.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise KafkaException(f"topic {topic} does not exist on {brokers} (vpp up creates it)")
        tps = []
        for p in sorted(found.partitions):
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            tps.append(TopicPartition(topic, p, high))
        self._consumer.assign(tps)
        self._decode, self._loop, self._on_record = decode, loop, on_record
        self.bad = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-commands", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            records = []
            for msg in self._consumer.consume(num_messages=1000, timeout=0.1):
                if msg.error() is not None or msg.value() is None:
                    continue
                try:
                    records.append(self._decode(msg.value()))
                except Exception as exc:  # noqa: BLE001 - one bad record never stops command delivery
                    self.bad += 1
                    _log.warning("undecodable set point at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            if records:
                self._loop.call_soon_threadsafe(self._deliver, records)

    def _deliver(self, records: list[dict]) -> None:
        for r in records:
            self._on_record(r)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()
