"""The alert webhook: a JSON POST for each alert that fires or resolves (setting ``alert_webhook_url``).

Never blocks the flow: ``submit`` puts the payload on a bounded queue and returns at once; one
background thread posts with ``httpx``, retrying a failure (a transport error or an HTTP status of
400 and above, except 4xx other than 408/429, which no retry will fix) with exponential backoff.
A full queue drops the notification, and a notification whose retries are exhausted is given up;
both are counted (``sent``, ``failed``, ``dropped``, and the OpenTelemetry counter
``vpp.alerts.webhook`` with attribute ``outcome``) and logged. The URL is never logged: it may
carry a token.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Mapping

import httpx

from sinks.alert_store import ms_to_datetime

__all__ = ["WebhookNotifier", "webhook_payload"]

_log = logging.getLogger(__name__)
_STOP = object()


def webhook_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body for one alert record: its fields, times as ISO 8601 UTC (pure)."""
    body = dict(alert)
    for name in ("started_at", "at"):
        body[name] = ms_to_datetime(alert[name]).isoformat().replace("+00:00", "Z")
    return body


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return code >= 500 or code in (408, 429)
    return isinstance(exc, httpx.TransportError)


class WebhookNotifier:
    """Posts payloads to ``url`` from a background thread; see the module docstring."""

    def __init__(self, url: str, *, queue_size: int = 1000, attempts: int = 5, first_delay_s: float = 0.5,
                 max_delay_s: float = 30.0, timeout_s: float = 10.0, sleep: Callable[[float], None] = time.sleep):
        self._url = url
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._attempts, self._first_delay_s, self._max_delay_s = attempts, first_delay_s, max_delay_s
        self._sleep = sleep
        self._client = httpx.Client(timeout=timeout_s)
        self.sent = self.failed = self.dropped = 0
        self._counter = None
        try:
            from opentelemetry import metrics

            self._counter = metrics.get_meter("vpp").create_counter(
                "vpp.alerts.webhook", unit="{notification}", description="alert webhook notifications, by outcome")
        except Exception:  # noqa: BLE001 - metrics are optional here; the attributes above still count
            self._counter = None
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def _count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if self._counter is not None:
            self._counter.add(1, {"outcome": outcome})

    def submit(self, payload: Mapping[str, Any]) -> bool:
        """Queue one notification; False (counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(dict(payload))
            return True
        except queue.Full:
            self._count("dropped")
            _log.warning("alert webhook queue full (%d): notification for alert %s dropped",
                         self._queue.maxsize, payload.get("alert_id"))
            return False

    def _post(self, payload: dict[str, Any]) -> None:
        delay = self._first_delay_s
        for attempt in range(1, self._attempts + 1):
            try:
                self._client.post(self._url, json=payload).raise_for_status()
                self._count("sent")
                return
            except httpx.HTTPError as exc:
                if attempt == self._attempts or not _retryable(exc):
                    self._count("failed")
                    _log.error("alert webhook gave up on alert %s after %d attempt(s): %s", payload.get("alert_id"),
                               attempt, type(exc).__name__ if not isinstance(exc, httpx.HTTPStatusError)
                               else f"HTTP {exc.response.status_code}")
                    return
                self._sleep(delay)
                delay = min(delay * 2, self._max_delay_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._post(item)
            except Exception:  # noqa: BLE001 - a bad URL or payload must not end the thread: counted and logged
                self._count("failed")
                _log.exception("alert webhook failed on alert %s", item.get("alert_id"))
            finally:
                self._queue.task_done()

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued notification was sent or given up (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after what is queued (waiting at most ``timeout_s``) and close the client."""
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        self._client.close()
