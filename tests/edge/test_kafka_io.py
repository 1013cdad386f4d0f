"""The gateway's producer: a frame is done once, after the delivery report of EVERY one of its messages."""

from __future__ import annotations

import asyncio

from edge.kafka_io import DeliveryProducer
from edge_helpers import read_topic
from sinks.messages import OutMessage


def test_a_frame_is_confirmed_only_when_every_message_is_and_a_failure_mid_frame_is_its_error(isolated_settings):
    raw = isolated_settings.topic("telemetry.raw")
    values = [b'{"n": %d}' % i for i in range(5)]
    values[2] = b'{"n": 2, "pad": "' + b"x" * 5000 + b'"}'  # beyond message.max.bytes: refused, the others are not

    async def produce() -> tuple[list, list]:
        producer = DeliveryProducer(isolated_settings, asyncio.get_running_loop(), raw, extra={"message.max.bytes": 4096})
        try:
            loop = asyncio.get_running_loop()
            failing, clean = loop.create_future(), loop.create_future()
            await producer.produce_frame(b"pw-1", values, (), failing.set_result)
            await producer.produce_frame(b"pw-1", values[:2], [OutMessage(raw, "pw-1", b'{"n": 9}')], clean.set_result)
            return await asyncio.wait_for(failing, 30), await asyncio.wait_for(clean, 30)
        finally:
            assert await producer.close() == 0

    failing, clean = asyncio.run(produce())
    assert len(failing) == 1 and "too large" in failing[0].lower()  # the frame is not acked: the device sends it again
    assert clean == []
    on_topic = sorted(m.value() for m in read_topic(isolated_settings, "telemetry.raw", 7, timeout_s=10))
    assert on_topic == sorted(values[:2] + values[3:] + values[:2] + [b'{"n": 9}'])
