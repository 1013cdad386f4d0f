"""Where a flow reads and writes topics: a Kafka broker, or dump files for local replay.

A flow declaration asks its ports for input streams and hands them output
streams of ``OutMessage``; it never knows which transport runs it. This is
how ``vpp run`` and ``vpp replay`` execute the SAME dataflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream

from sinks.messages import OutMessage

__all__ = ["Ports", "KafkaPorts", "ReplayPorts", "RecordDumpPorts", "MemoryPorts"]


class Ports(Protocol):
    serde: object

    def topic(self, name: str) -> str: ...

    def read(self, flow: Dataflow, step_id: str, topics: list[str]) -> Stream[KafkaSourceMessage]: ...

    def write(self, step_id: str, stream: Stream[OutMessage]) -> None: ...


class _KafkaReadError(RuntimeError):
    pass


def _raise_consumer_error(step_id: str, err) -> None:
    # A consumer error is an infrastructure failure, not bad data: fail loudly, restart from the snapshot.
    raise _KafkaReadError(f"Kafka consumer error: {err}")


class KafkaPorts:
    """Topics on the configured broker, Avro ids from the schema registry."""

    def __init__(self, settings, *, batch_size: int = 1000, tail: bool = True):
        from vpp.serde import Serde

        self.settings = settings
        self.serde = Serde.from_settings(settings)
        self._batch_size = batch_size
        self._tail = tail

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def read(self, flow: Dataflow, step_id: str, topics: list[str]) -> Stream[KafkaSourceMessage]:
        import bytewax.connectors.kafka.operators as kop
        from confluent_kafka import OFFSET_BEGINNING

        from vpp.kafka_security import security_config

        kin = kop.input(step_id, flow, brokers=[self.settings.broker], topics=[self.topic(t) for t in topics],
                        add_config=security_config(self.settings), tail=self._tail, starting_offset=OFFSET_BEGINNING, batch_size=self._batch_size)
        op.inspect(f"{step_id}_errors", kin.errs, _raise_consumer_error)
        return kin.oks

    def write(self, step_id: str, stream: Stream[OutMessage]) -> None:
        from sinks.kafka import KafkaTopicSink

        op.output(step_id, stream, KafkaTopicSink(self.settings))


def _single_key(msg: OutMessage) -> str:
    return "out"


class ReplayPorts:
    """A dump file in, ``DIR/<topic>.jsonl`` out; local Avro ids, no service."""

    def __init__(self, dump: str | Path, out_dir: str | Path, outputs: tuple[str, ...]):
        from vpp.serde import Serde

        self.serde = Serde.local()
        self._dump = Path(dump)
        self._out_dir = Path(out_dir)
        self._outputs = outputs

    def topic(self, name: str) -> str:
        return name

    def read(self, flow: Dataflow, step_id: str, topics: list[str]) -> Stream[KafkaSourceMessage]:
        from sinks.dumps import DumpSource, base_topic

        wanted = frozenset(topics)
        stream = op.input(step_id, flow, DumpSource(self._dump))

        def in_topics(msg: KafkaSourceMessage) -> bool:
            return base_topic(msg.topic) in wanted

        return op.filter(f"{step_id}_topics", stream, in_topics)

    def write(self, step_id: str, stream: Stream[OutMessage]) -> None:
        from sinks.dumps import ReplayFileSink

        keyed = op.key_on(f"{step_id}_key", stream, _single_key)
        op.output(step_id, keyed, ReplayFileSink(self._out_dir, self.serde, self._outputs))


class MemoryPorts:
    """In-process ports for tests and benchmarks: a list of messages (or any bytewax source) in; everything
    written collected in ``written`` as ``OutMessage`` s, or handed to the sinks ``sink()`` makes; local Avro ids."""

    def __init__(self, source, *, batch_size: int = 100, sink=None, serde=None):
        from vpp.serde import Serde

        self.serde = serde or Serde.local()
        self.written: list[OutMessage] = []
        self._source, self._batch_size, self._sink = source, batch_size, sink

    def topic(self, name: str) -> str:
        return name

    def read(self, flow: Dataflow, step_id: str, topics: list[str]) -> Stream[KafkaSourceMessage]:
        from bytewax.testing import TestingSource

        source = self._source
        if isinstance(source, list):
            source = TestingSource(source, batch_size=self._batch_size)
        return op.input(step_id, flow, source)

    def write(self, step_id: str, stream: Stream[OutMessage]) -> None:
        from bytewax.testing import TestingSink

        op.output(step_id, stream, self._sink() if self._sink is not None else TestingSink(self.written))

    def records(self, topic: str) -> list[dict]:
        """The decoded records written to ``topic``."""
        return [self.serde.decode(m.value) for m in self.written if m.topic == topic]


class RecordDumpPorts(ReplayPorts):
    """Replay ports over a dump of Avro topics as ``vpp dump`` writes them: each payload is the JSON form of a
    record, Avro-encoded on the way in so the flow decodes exactly what it decodes from the broker. A payload
    that is not a record of its topic is passed on as it is, and the flow dead-letters it as it would live."""

    def read(self, flow: Dataflow, step_id: str, topics: list[str]) -> Stream[KafkaSourceMessage]:
        from functools import partial

        stream = super().read(flow, step_id, topics)
        return op.flat_map_batch(f"{step_id}_avro", stream, partial(_json_records_to_avro, self.serde))


def _json_records_to_avro(serde, msgs: list[KafkaSourceMessage]) -> list[KafkaSourceMessage]:
    import orjson

    from sinks.dumps import base_topic
    from vpp.serde import SerdeError

    out = []
    loads, encode = orjson.loads, serde.encode
    for m in msgs:
        try:
            value = encode(base_topic(m.topic), loads(m.value))
        except (orjson.JSONDecodeError, SerdeError, TypeError, ValueError, AttributeError, KeyError):
            value = m.value
        out.append(KafkaSourceMessage(key=m.key, value=value, topic=m.topic, partition=m.partition, offset=m.offset,
                                      timestamp=m.timestamp))
    return out
