"""Decoding Avro topic messages inside flows: every bad message becomes a dead letter, none stops a flow.

The one decode-or-dead-letter of the platform. A message that cannot be used (a null value, junk or
truncated bytes, an unknown schema id, a record written with another topic's schema, a record that
decodes but breaks the topic's contract) becomes a ``telemetry.dlq`` record with its reason code (see
``vpp.dead_letters``), its source coordinates (topic, partition, offset, Kafka timestamp) and its bytes,
and the flow goes on with the next message. Only an unreachable schema registry
(``vpp.serde.RegistryUnavailable``) escapes: that is a dependency, not a message, and the flow stops and
resumes from its snapshot.

One loop, ``decode_each``, in three shapes, and a dataflow step over the second:

- ``decode_each`` yields ``(message, record, None)`` or ``(message, None, (reason, why))``, for a flow that
  treats some failures its own way (a dead letter read from ``telemetry.dlq`` itself cannot go back there);
- ``decode_or_dead_letter`` returns the batch as records and dead-letter ``OutMessage`` s in one list (split
  them with ``records_only`` / ``dead_letters_only``);
- ``decoded_messages`` yields ``(message, record)`` pairs for flows that need the message's position too,
  and appends dead letters to a list the caller passes;
- ``read_decoded`` reads topics into a dataflow and gives two streams: the records and the dead letters.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, Iterator

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream

from sinks.messages import OutMessage
from vpp.dead_letters import dead_letter_record, kafka_timestamp_ms
from vpp.serde import Serde, SerdeError

__all__ = ["ContractViolation", "decode_each", "decode_or_dead_letter", "decoded_messages", "read_decoded", "dead_letter_of",
           "dead_letter_message", "is_record", "records_only", "dead_letters_only"]

#: What a record's conversion (``convert``) raises when a decoded record breaks the topic's contract.
_CONTRACT_ERRORS = (KeyError, TypeError, ValueError, ArithmeticError)


class ContractViolation(ValueError):
    """A record that decodes but cannot be used; the message names the rule it breaks."""


def dead_letter_of(msg: KafkaSourceMessage, reason: str, why: str) -> dict[str, Any]:
    """A ``telemetry.dlq`` record for a message of one of our topics."""
    device_id = msg.key.decode("utf-8", "replace") if isinstance(msg.key, (bytes, bytearray)) else msg.key
    return dead_letter_record(reason, why, msg.value, source_topic=msg.topic, source_partition=msg.partition,
                              source_offset=msg.offset, source_timestamp=kafka_timestamp_ms(msg), device_id=device_id)


def dead_letter_message(serde: Serde, dlq_topic: str, msg: KafkaSourceMessage, reason: str, why: str) -> OutMessage:
    record = dead_letter_of(msg, reason, why)
    return OutMessage(dlq_topic, record["device_id"], serde.encode(dlq_topic, record), kafka_timestamp_ms(msg))


def decode_each(serde: Serde, msgs: Iterable[KafkaSourceMessage], convert: Callable[[dict], Any] | None = None
                ) -> Iterator[tuple[KafkaSourceMessage, Any, tuple[str, str] | None]]:
    """``(message, record, None)`` for every usable message (``convert(record)`` when given), else
    ``(message, None, (reason code, why))``."""
    decode = serde.decode
    for msg in msgs:
        try:
            record = decode(msg.value, msg.topic)
            if convert is not None:
                record = convert(record)
        except SerdeError as exc:
            yield msg, None, (exc.reason, str(exc))
        except ContractViolation as exc:
            yield msg, None, ("contract_violation", str(exc))
        except _CONTRACT_ERRORS as exc:
            yield msg, None, ("contract_violation", f"{type(exc).__name__}: {exc}")
        else:
            yield msg, record, None


def decoded_messages(serde: Serde, dlq_topic: str, msgs: Iterable[KafkaSourceMessage], dead_letters: list[OutMessage],
                     convert: Callable[[dict], Any] | None = None, metrics=None) -> Iterator[tuple[KafkaSourceMessage, Any]]:
    """``(message, record)`` for every usable message (``convert(record)`` when given); the others are appended
    to ``dead_letters`` and counted in ``metrics`` (a ``FlowMetrics``) by reason."""
    for msg, record, failure in decode_each(serde, msgs, convert):
        if failure is None:
            yield msg, record
            continue
        dead_letters.append(dead_letter_message(serde, dlq_topic, msg, *failure))
        if metrics is not None:
            metrics.count_rejected(failure[0])


def decode_or_dead_letter(serde: Serde, dlq_topic: str, msgs: Iterable[KafkaSourceMessage],
                          convert: Callable[[dict], Any] | None = None, metrics=None) -> list[Any]:
    """Each message as its decoded record (dict), or as a dead-letter ``OutMessage`` for ``dlq_topic``."""
    out: list[Any] = []
    for _, record in decoded_messages(serde, dlq_topic, msgs, out, convert, metrics):
        out.append(record)
    return out


def is_record(item: Any) -> bool:
    return not isinstance(item, OutMessage)


def records_only(items: list[Any]) -> list[Any]:
    """The decoded records of a batch from ``decode_or_dead_letter`` (a batch filter: cheaper than ``op.branch``)."""
    return [i for i in items if type(i) is not OutMessage]


def dead_letters_only(items: list[Any]) -> list[OutMessage]:
    """The dead letters of a batch from ``decode_or_dead_letter``."""
    return [i for i in items if type(i) is OutMessage]


def read_decoded(ports, flow: Dataflow, step_id: str, topics: list[str]) -> tuple[Stream, Stream]:
    """``ports.read`` of ``topics`` decoded: (the records, the dead letters for ``telemetry.dlq``)."""
    msgs = ports.read(flow, step_id, topics)
    items = op.flat_map_batch("decode", msgs, partial(decode_or_dead_letter, ports.serde, ports.topic("telemetry.dlq")))
    return op.flat_map_batch("records", items, records_only), op.flat_map_batch("dead_letters", items, dead_letters_only)
