"""Flow ``store-dlq``: ``telemetry.dlq`` -> PostgreSQL ``telemetry_dlq`` for inspection (`vpp dlq`).

Upserts by source position, so a replayed dead letter is one row. A DLQ
message that cannot itself be decoded is stored as a row with its reason code
(``malformed_avro``, ``tombstone``, ...) and its bytes (it cannot go back to the DLQ topic without looping).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterable

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.decode import dead_letter_of, decode_each
from sinks.ports import KafkaPorts, Ports
from sinks.postgres import DlqSink
from vpp.serde import Serde

__all__ = ["build_flow", "dlq_records"]


def dlq_records(serde: Serde, msgs: Iterable[KafkaSourceMessage]) -> list[dict[str, Any]]:
    """The dead letters of a batch; a DLQ message that cannot itself be decoded is stored as a dead letter of
    its own (with its reason code) rather than sent back to the DLQ topic, which would loop."""
    return [record if failure is None else dead_letter_of(msg, *failure)
            for msg, record, failure in decode_each(serde, msgs)]


def build_flow(settings, *, ports: Ports | None = None, sink=None) -> Dataflow:
    ports = ports or KafkaPorts(settings)
    flow = Dataflow("store_dlq")
    msgs = ports.read(flow, "dlq_in", ["telemetry.dlq"])
    records = op.flat_map_batch("decode", msgs, partial(dlq_records, ports.serde))
    op.output("postgres_out", records, sink or DlqSink(settings.postgres_dsn))
    return flow


__getattr__ = flow_from_environment(build_flow)
