"""OpenTelemetry set-up shared by every flow and service.

Tracing and metrics use the SDK. When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
spans and metrics go to that collector over OTLP/HTTP; otherwise providers
are installed with no exporter (nothing leaves the process, the counters still
count and tests can read them with an in-memory reader).

The counters operators need exist from the start, one set per flow:
``vpp.records.in``, ``vpp.records.out``, ``vpp.records.rejected`` (attribute
``reason``), ``vpp.records.late`` and ``vpp.records.duplicates``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

__all__ = ["FlowMetrics", "setup_observability"]

_configured: dict[str, Any] = {}


def setup_observability(service_name: str, *, metric_readers: list | None = None) -> None:
    """Install tracer and meter providers once per process (idempotent)."""
    if _configured:
        return
    resource = Resource.create({"service.name": service_name, "service.namespace": "vpp"})
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    tracer_provider = TracerProvider(resource=resource)
    readers = list(metric_readers or [])
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    _configured["service"] = service_name


@dataclass(frozen=True)
class FlowMetrics:
    """The operator counters of one flow, labelled with ``flow``."""

    flow: str
    records_in: Any
    records_out: Any
    rejected: Any
    late: Any
    duplicates: Any
    dropped: Any = None

    @classmethod
    def for_flow(cls, flow: str) -> "FlowMetrics":
        meter = metrics.get_meter("vpp")
        return cls(
            flow=flow,
            records_in=meter.create_counter("vpp.records.in", unit="{record}", description="records read by the flow"),
            records_out=meter.create_counter("vpp.records.out", unit="{record}", description="records written by the flow"),
            rejected=meter.create_counter("vpp.records.rejected", unit="{record}", description="records sent to a DLQ, by reason"),
            late=meter.create_counter("vpp.records.late", unit="{record}", description="records later than the allowed lateness"),
            duplicates=meter.create_counter("vpp.records.duplicates", unit="{record}", description="duplicate records dropped"),
            dropped=meter.create_counter("vpp.records.dropped", unit="{record}",
                                         description="records dropped by design (not dead letters), by reason"),
        )

    def count_in(self, n: int = 1) -> None:
        if n:
            self.records_in.add(n, {"flow": self.flow})

    def count_out(self, n: int = 1, topic: str = "") -> None:
        if n:
            self.records_out.add(n, {"flow": self.flow, "topic": topic})

    def count_rejected(self, reason: str, n: int = 1) -> None:
        # the path part of missing_field:/bad_field: codes is kept: it is bounded by the dialect schemas
        self.rejected.add(n, {"flow": self.flow, "reason": reason})

    def count_late(self, n: int = 1) -> None:
        if n:
            self.late.add(n, {"flow": self.flow})

    def count_dropped(self, reason: str, n: int = 1) -> None:
        """A record left out on purpose (a reading of a device the registry does not know yet, a point the
        time-series store refused): never silently."""
        if n and self.dropped is not None:
            self.dropped.add(n, {"flow": self.flow, "reason": reason})

    def count_duplicates(self, n: int = 1) -> None:
        if n:
            self.duplicates.add(n, {"flow": self.flow})
