"""Decoding Avro topic messages inside flows, with an error stream instead of a crash.

A message that fails to decode is a record we produced ourselves and cannot
read: it becomes a dead letter with reason ``malformed_avro`` (a code added
beside the spec's raw-reading codes, which are about gateway input) carrying
its bytes and position, so nothing is lost and an operator sees it.
"""

from __future__ import annotations

from typing import Any, Iterable

from bytewax.connectors.kafka import KafkaSourceMessage

from sinks.messages import OutMessage
from vpp.serde import Serde, SerdeError

__all__ = ["decode_or_dead_letter", "dead_letter_record", "is_record", "records_only", "dead_letters_only"]


def dead_letter_record(msg: KafkaSourceMessage, why: str) -> dict[str, Any]:
    """A ``telemetry.dlq`` record for a message that could not be decoded."""
    return {"reason": "malformed_avro", "detail": why, "raw": msg.value or b"", "source_topic": msg.topic,
            "source_partition": msg.partition, "source_offset": msg.offset,
            "device_id": msg.key.decode("utf-8", "replace") if msg.key else None}


def decode_or_dead_letter(serde: Serde, dlq_topic: str, msgs: Iterable[KafkaSourceMessage]) -> list[Any]:
    """Each message as its decoded record (dict), or as a dead-letter OutMessage for ``dlq_topic``."""
    out: list[Any] = []
    decode = serde.decode
    for msg in msgs:
        try:
            out.append(decode(msg.value))
        except SerdeError as exc:
            record = dead_letter_record(msg, str(exc))
            out.append(OutMessage(dlq_topic, record["device_id"], serde.encode(dlq_topic, record),
                                  msg.timestamp[1] if msg.timestamp else None))
    return out


def is_record(item: Any) -> bool:
    return not isinstance(item, OutMessage)


def records_only(items: list[Any]) -> list[Any]:
    """The decoded records of a batch from ``decode_or_dead_letter`` (a batch filter: cheaper than ``op.branch``)."""
    return [i for i in items if type(i) is not OutMessage]


def dead_letters_only(items: list[Any]) -> list[OutMessage]:
    """The dead letters of a batch from ``decode_or_dead_letter``."""
    return [i for i in items if type(i) is OutMessage]
