"""Time-series sink: InfluxDB line protocol over the v2 write API with ``influxdb-client``.

Works against InfluxDB 2/3 in production and VictoriaMetrics locally.

Telemetry layout (one point per canonical reading):

- measurement ``telemetry``
- tags ``device_id``, ``site_id``, ``region_path``, ``dialect``
- fields ``soc_pct``, ``battery_w``, ``solar_w``, ``load_w``, ``grid_w``,
  ``capacity_wh`` (floats; a null field is omitted), ``grid_connected``
  (boolean), ``flags`` (count of repairs, integer)
- timestamp: the reading's ``ts`` in milliseconds.

Idempotent on replay: a point is identified by (measurement, tag set, field,
time), so writing the same reading twice writes the same point (InfluxDB
overwrites; VictoriaMetrics deduplicates with ``-dedup.minScrapeInterval=1ms``).
Writes are batched per bytewax batch and retried with exponential backoff.

A point the store would refuse or silently drop (a time more than ``timeseries_max_future_s`` ahead of
now or more than ``timeseries_max_age_s`` behind it; VictoriaMetrics answers 204 and drops such points
as "too big timestamp") is not sent: it is counted (``vpp.records.dropped``, reason
``timeseries_out_of_range``) and logged with how many and the first one, never silently gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = ["telemetry_lines", "aggregate_lines", "alert_event_lines", "TimeseriesSink", "write_with_retry",
           "split_by_time_range"]

_log = logging.getLogger(__name__)

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_TELEMETRY_FLOATS = ("soc_pct", "battery_w", "solar_w", "load_w", "grid_w", "capacity_wh")


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def _float(v: float) -> str:
    return repr(float(v))


def telemetry_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Line-protocol lines for canonical readings (pure; ms precision)."""
    out = []
    for r in records:
        fields = [f"{name}={_float(r[name])}" for name in _TELEMETRY_FLOATS if r.get(name) is not None]
        if r.get("grid_connected") is not None:
            fields.append(f"grid_connected={'true' if r['grid_connected'] else 'false'}")
        fields.append(f"flags={len(r.get('flags') or ())}i")
        tags = (f"device_id={_tag(r['device_id'])},dialect={_tag(r['dialect'])},"
                f"region_path={_tag(r['region_path'])},site_id={_tag(r['site_id'])}")
        out.append(f"telemetry,{tags} {','.join(fields)} {int(r['ts'])}")
    return out


_AGGREGATE_FLOATS = ("battery_w", "solar_w", "load_w", "grid_w", "energy_available_wh", "headroom_wh",
                     "discharge_available_w", "charge_available_w", "capacity_wh", "soc_pct")
_AGGREGATE_INTS = ("devices_known", "devices_reporting", "estimated_devices", "late")


def aggregate_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Line-protocol lines for node aggregates: one series per node, stamped at window start."""
    out = []
    for r in records:
        fields = [f"{name}={_float(r[name])}" for name in _AGGREGATE_FLOATS if r.get(name) is not None]
        fields += [f"{name}={int(r.get(name) or 0)}i" for name in _AGGREGATE_INTS]
        out.append(f"fleet_node,node_path={_tag(r['node_path'])},depth={int(r['depth'])} {','.join(fields)} {int(r['window_start'])}")
    return out


def alert_event_lines(items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Lines for ``("alert" | "event", record)``: measurements ``alert`` (one point per change of state, fields
    ``value``/``threshold``) and ``event`` (``count=1i``), tagged by what identifies them and stamped at ``at``,
    so a record written twice is the same point. An empty ``node_path`` is left out (no empty tags)."""
    out = []
    for kind, r in items:
        node = f",node_path={_tag(r['node_path'])}" if r.get("node_path") else ""
        if kind == "alert":
            out.append(f"alert,rule={_tag(r['rule'])},subject={_tag(r['subject'])},state={r['state']},"
                       f"severity={r['severity']}{node} value={_float(r['value'])},threshold={_float(r['threshold'])} "
                       f"{int(r['at'])}")
        else:
            out.append(f"event,kind={_tag(r['kind'])},subject={_tag(r['subject'])}{node} count=1i {int(r['at'])}")
    return out


def write_with_retry(write: Callable[[Sequence[str]], None], lines: Sequence[str], *, attempts: int = 6,
                     first_delay_s: float = 0.2, sleep: Callable[[float], None] = time.sleep) -> None:
    """Call ``write(lines)``, retrying failures with exponential backoff; re-raise after ``attempts``."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            write(lines)
            return
        except Exception as exc:  # noqa: BLE001 - any transport/server error is retried, then raised
            if attempt == attempts:
                raise
            _log.warning("time-series write of %d lines failed (attempt %d/%d): %s; retrying in %.1fs",
                         len(lines), attempt, attempts, exc, delay)
            sleep(delay)
            delay = min(delay * 2, 10.0)


def split_by_time_range(lines: Sequence[str], now_ms: int, max_future_ms: int, max_age_ms: int) -> tuple[list[str], list[str]]:
    """(lines the store keeps, lines outside its time range) by each line's timestamp in ms (pure)."""
    keep, out_of_range = [], []
    low, high = now_ms - max_age_ms, now_ms + max_future_ms
    for line in lines:
        ts = int(line.rsplit(" ", 1)[1])
        (keep if low <= ts <= high else out_of_range).append(line)
    return keep, out_of_range


class _Partition(StatelessSinkPartition[Mapping[str, Any]]):
    def __init__(self, settings, to_lines, batch_lines: int, metrics=None):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(url=settings.timeseries_url, token=settings.timeseries_token,
                                      org=settings.timeseries_org, timeout=30_000)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket = settings.timeseries_bucket
        self._to_lines = to_lines
        self._batch_lines = batch_lines
        self._max_future_ms = int(settings.timeseries_max_future_s * 1000)
        self._max_age_ms = int(settings.timeseries_max_age_s * 1000)
        self._metrics = metrics

    def _write(self, lines: Sequence[str]) -> None:
        from influxdb_client import WritePrecision

        self._api.write(bucket=self._bucket, record="\n".join(lines), write_precision=WritePrecision.MS)

    def write_batch(self, items: list[Mapping[str, Any]]) -> None:
        lines, out_of_range = split_by_time_range(self._to_lines(items), int(time.time() * 1000), self._max_future_ms,
                                                  self._max_age_ms)
        if out_of_range:
            _log.warning("%d points outside the time-series store's range (%s ahead, %s behind now) were not written; "
                         "first: %s", len(out_of_range), self._max_future_ms, self._max_age_ms, out_of_range[0][:300])
            if self._metrics is not None:
                self._metrics.count_dropped("timeseries_out_of_range", len(out_of_range))
        for i in range(0, len(lines), self._batch_lines):
            write_with_retry(self._write, lines[i:i + self._batch_lines])

    def close(self) -> None:
        self._client.close()


class TimeseriesSink(DynamicSink[Mapping[str, Any]]):
    """Decoded records in, points out; ``to_lines`` shapes them (``telemetry_lines`` or ``aggregate_lines``)."""

    def __init__(self, settings, to_lines: Callable[[Iterable[Mapping[str, Any]]], list[str]] = telemetry_lines,
                 *, batch_lines: int = 5000):
        self._settings = settings
        self._to_lines = to_lines
        self._batch_lines = batch_lines

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        from vpp.observability import FlowMetrics

        return _Partition(self._settings, self._to_lines, self._batch_lines, FlowMetrics.for_flow(step_id))
