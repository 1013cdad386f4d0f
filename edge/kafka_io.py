"""The gateway's Kafka side: a producer that reports when every message of a frame was delivered, and a follower of ``device.commands``.

``DeliveryProducer.produce_frame(key, values, others, on_done)`` produces a frame's readings to its topic (one
``produce_batch`` call) and any ``others`` (dead letters) with the idempotent producer (acks=all,
``sinks.kafka.producer_config``) and calls ``on_done(errors)`` once EVERY message of the frame has its delivery
report (empty: the broker confirmed all). Each message has its own report, counted down per frame: ``on_done`` runs
once, within its last report (no future, no extra turn of the loop: the gateway answers the device right there).
No report is skipped: with ``enable.gapless.guarantee`` off (and message
timeouts never covered by it), an earlier message of a partition can fail while a later one is
delivered, so "the last one arrived" would not prove the others did.

Delivery reports are served on the event loop's own thread: a task polls librdkafka every
``poll_interval_s`` while anything is outstanding, each poll serving every report that is ready. A
report runs Python, so it needs the GIL; served by a poll thread, each report took the GIL from the
busy loop (a wait of up to the interpreter's 5 ms switch interval, once per message) and the
gateway idled between bursts at a fraction of the broker's pace (bench/README.md).

When librdkafka's local queue is full, ``produce_frame`` waits (it does not buffer beyond it) and
``room`` is cleared, so the gateway stops reading every socket until the queue has drained below half.

``CommandFollower`` reads every partition of ``device.commands`` from the end as of its start
(explicit offsets from the watermarks, no consumer group: every gateway process sees every set
point and keeps only those of devices it holds), decodes them and hands them to the loop in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from sinks.kafka import producer_config
from sinks.messages import OutMessage

__all__ = ["DeliveryProducer", "CommandFollower"]

_log = logging.getLogger(__name__)
_QUEUE_MAX = 100_000


class _Frame:
    """The delivery reports of one frame's messages, counted down; calls ``on_done`` with the errors at the last."""

    __slots__ = ("remaining", "errors", "on_done")

    def __init__(self, n: int, on_done: Callable[[list[str]], None]):
        self.remaining, self.errors, self.on_done = n, [], on_done

    def on_delivery(self, err, msg) -> None:  # served on the loop's thread by DeliveryProducer's poll
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}" if msg is not None else err.str())
        self.remaining -= 1
        if self.remaining == 0:
            self.on_done(self.errors)


class _Failed:
    def __init__(self, text: str):
        self._text = text

    def str(self) -> str:
        return self._text


class DeliveryProducer:
    """Frames go to ``topic`` (``produce_frame``); build it inside the running loop; ``await close()`` flushes."""

    def __init__(self, settings: Any, loop: asyncio.AbstractEventLoop, topic: str, *, extra: dict[str, Any] | None = None,
                 queue_max: int = _QUEUE_MAX, poll_interval_s: float = 0.001):
        config = producer_config(settings, {"queue.buffering.max.messages": queue_max, **(extra or {})})
        self._producer = Producer(config)
        self._loop, self._topic = loop, topic
        self._queue_max, self._low_water = queue_max, queue_max // 2
        self._poll_interval_s = poll_interval_s
        self.room = asyncio.Event()
        self.room.set()
        self._outstanding = asyncio.Event()  # set while librdkafka holds messages or reports
        self._poller = loop.create_task(self._serve_reports())

    async def _serve_reports(self) -> None:
        poll, outstanding = self._producer.poll, self._outstanding
        while True:
            if len(self._producer) == 0:
                outstanding.clear()
                await outstanding.wait()
            try:
                poll(0)
            except Exception:  # noqa: BLE001 - a failing report handler must not stop serving the others
                _log.exception("a delivery report handler failed")
            await asyncio.sleep(self._poll_interval_s)

    async def produce_frame(self, key: bytes, values: Sequence[bytes], others: Sequence[OutMessage],
                            on_done: Callable[[list[str]], None]) -> None:
        """Produce ``values`` to the frame topic under ``key`` (one ``produce_batch``), then ``others``, waiting
        while the local queue is full; ``on_done(errors)`` runs once every report ran."""
        n = len(values) + len(others)
        if n == 0:
            on_done([])
            return
        frame = _Frame(n, on_done)
        on_delivery = frame.on_delivery
        self._outstanding.set()
        if values:
            await self._produce_batch([{"key": key, "value": v} for v in values], on_delivery)
        for m in others:
            while True:
                try:
                    self._producer.produce(m.topic, m.value, m.key, timestamp=m.timestamp_ms or 0, on_delivery=on_delivery)
                    break
                except BufferError:
                    await self._wait_for_room()
                except KafkaException as exc:  # e.g. an unknown topic: nothing will report on this one
                    on_delivery(_Failed(f"{m.topic}: {exc}"), None)
                    break

    async def _produce_batch(self, batch: list[dict], on_delivery) -> None:
        """One call for a frame's messages (the cheapest per message); a message refused at once (``_error``: no
        report will come for it) is reported failed here, or produced again once there is room if the queue was full."""
        if len(self._producer) + len(batch) > self._queue_max:
            await self._wait_for_room()
        while batch:
            if self._producer.produce_batch(self._topic, batch, on_delivery=on_delivery) == len(batch):
                return  # all queued (the usual case): no message to look at
            refused = [m for m in batch if "_error" in m]
            batch = []
            for m in refused:
                err = m.pop("_error")
                if err.code() == KafkaError._QUEUE_FULL:
                    batch.append(m)
                else:
                    on_delivery(err, None)
            if batch:
                await self._wait_for_room()

    async def _wait_for_room(self) -> None:
        self.room.clear()
        while len(self._producer) > self._low_water:
            await asyncio.sleep(0.01)
        self.room.set()

    def queued(self) -> int:
        return len(self._producer)

    async def close(self, timeout_s: float = 10.0) -> int:
        """Wait (at most ``timeout_s``) for every outstanding delivery report; returns how many were left."""
        deadline = self._loop.time() + timeout_s
        while len(self._producer) and self._loop.time() < deadline:
            await asyncio.sleep(0.01)  # the poller serves the reports, on this thread
        self._poller.cancel()
        return len(self._producer)


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
