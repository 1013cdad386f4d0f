"""Flow ``store-alerts``: ``fleet.alerts`` + ``fleet.events`` -> PostgreSQL + the time-series store.

PostgreSQL (``sinks.alert_store``): ``alerts`` (one row per alert, its current state), ``alert_events``
(every transition once), ``events`` (once per ``event_id``). Time series
(``sinks.timeseries.alert_event_lines``): measurements ``alert`` and ``event``. Both are idempotent, so
the at-least-once delivery of the alerts flow leaves them as an uninterrupted run would.

When ``alert_webhook_url`` is set, each transition to ``firing`` or ``resolved`` stored for the first
time, of an alert not silenced, is posted to it from a background thread (``sinks.webhook``): a slow
or failing receiver never holds the flow up, and a replayed record is not posted again.

A message that cannot be decoded goes to ``telemetry.dlq``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterable, Mapping

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows._common.environment import flow_from_environment
from flows._common.decode import dead_letters_only, decoded_messages, records_only
from sinks.dumps import base_topic
from sinks.ports import KafkaPorts, Ports
from sinks.timeseries import TimeseriesSink, alert_event_lines

__all__ = ["build_flow", "tagged_records", "AlertStoreSink"]

_KINDS = {"fleet.alerts": "alert", "fleet.events": "event"}


def tagged_records(serde, dlq_topic: str, msgs: Iterable[KafkaSourceMessage]) -> list[Any]:
    """``("alert" | "event", record)`` per message, or a dead-letter OutMessage when it cannot be decoded."""
    out: list[Any] = []
    for msg, record in decoded_messages(serde, dlq_topic, msgs, out):
        out.append((_KINDS[base_topic(msg.topic)], record))
    return out


class _StorePartition(StatelessSinkPartition[tuple[str, Mapping[str, Any]]]):
    def __init__(self, dsn: str, webhook_url: str):
        from sinks.alert_store import AlertStore
        from sinks.webhook import WebhookNotifier

        self._store = AlertStore(dsn)
        self.notifier = WebhookNotifier(webhook_url) if webhook_url else None

    def write_batch(self, items: list[tuple[str, Mapping[str, Any]]]) -> None:
        from sinks.webhook import webhook_payload

        for alert, silenced in self._store.write(items):
            if self.notifier is not None and not silenced and alert["state"] in ("firing", "resolved"):
                self.notifier.submit(webhook_payload(alert))

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
        self._store.close()


class AlertStoreSink(DynamicSink[tuple[str, Mapping[str, Any]]]):
    """Alerts and events into PostgreSQL (one connection per worker), new transitions to the webhook."""

    def __init__(self, dsn: str, webhook_url: str = ""):
        self._dsn, self._webhook_url = dsn, webhook_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self._dsn, self._webhook_url)


def build_flow(settings, *, ports: Ports | None = None, postgres_sink=None, timeseries_sink=None) -> Dataflow:
    ports = ports or KafkaPorts(settings)
    flow = Dataflow("store_alerts")
    msgs = ports.read(flow, "alerts_events_in", ["fleet.alerts", "fleet.events"])
    items = op.flat_map_batch("decode", msgs, partial(tagged_records, ports.serde, ports.topic("telemetry.dlq")))
    records = op.flat_map_batch("records", items, records_only)
    op.output("postgres_out", records, postgres_sink or AlertStoreSink(settings.postgres_dsn, settings.alert_webhook_url))
    op.output("timeseries_out", records, timeseries_sink or TimeseriesSink(settings, alert_event_lines))
    ports.write("dlq_out", op.flat_map_batch("dead_letters", items, dead_letters_only))
    return flow


__getattr__ = flow_from_environment(build_flow)
