"""The autobidder's client of the market API: ``POST /bids`` over httpx, sent inline or from a bounded pool.

``MarketApi(payload) -> (outcome, body)`` is one request with explicit timeouts; the outcome is
what ``BidderState.on_bid_response`` takes: ``accepted`` (2xx), ``conflict`` (409), ``rejected``
(another 4xx: the bid will not be taken as it is), ``retry`` (unreachable, timed out, 5xx,
408/429, an answer that is not JSON).

A bytewax worker holds the state of many nodes' workflows, so it must not wait on the market.
``PooledBids`` sends from a small thread pool and keeps the answers per node until the node's
stateful step takes them (on its next batch or at its next ``notify_at``, which it sets a moment
ahead while an answer is due). A bid already on its way is not sent twice, and when every
thread is busy a bid is not queued: the workflow's resend deadline sends it again, so a slow or
dead market costs the worker nothing and memory stays bounded. ``InlineBids`` answers at once
(replay and tests, where the order of events must be deterministic).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx

__all__ = ["Answer", "InlineBids", "MarketApi", "PooledBids", "DEFAULT_TIMEOUT"]

#: one bid may wait this long: connecting, sending, reading the answer, getting a pooled connection
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0, pool=2.0)
_RETRY_STATUSES = frozenset({408, 425, 429})

Submit = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
Answer = tuple[dict[str, Any], str, dict[str, Any]]  # (payload, outcome, body)


class MarketApi:
    """``POST {url}/bids``; the answer as ``(outcome, body)``. Thread-safe (one pooled httpx client)."""

    def __init__(self, url: str, *, token: str = "", timeout: httpx.Timeout = DEFAULT_TIMEOUT):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=16))

    def __call__(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            response = self._client.post("/bids", json=payload)
        except httpx.HTTPError as exc:  # unreachable, timed out, broken answer: try again later
            return "retry", {"error": f"market at {self.url} not reachable: {type(exc).__name__}: {exc}"}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"error": f"HTTP {response.status_code}, not a JSON object"}
            if response.is_success:
                return "retry", body
        status = response.status_code
        if response.is_success:
            return "accepted", body
        if status == 409:
            return "conflict", body
        if 400 <= status < 500 and status not in _RETRY_STATUSES:
            return "rejected", body
        return "retry", {"error": f"market answered HTTP {status}: {body.get('error', '')}".rstrip(": ")}

    def close(self) -> None:
        self._client.close()


class InlineBids:
    """Sends each bid when asked and keeps its answer for ``take``: deterministic, and it waits on the market."""

    def __init__(self, submit: Submit):
        self._submit = submit
        self._answers: dict[str, list[Answer]] = {}

    def send(self, payload: dict[str, Any]) -> bool:
        outcome, body = self._submit(payload)
        self._answers.setdefault(str(payload["node_path"]), []).append((payload, outcome, body))
        return True

    def take(self, node_path: str) -> list[Answer]:
        return self._answers.pop(node_path, [])

    def waiting(self, node_path: str) -> bool:
        return bool(self._answers.get(node_path))


class PooledBids:
    """Sends bids from ``max_in_flight`` threads; answers wait per node for ``take``. See the module docstring."""

    def __init__(self, submit: Submit, *, max_in_flight: int = 8):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._submit = submit
        self._max = max_in_flight
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="market-bids")
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}  # bid id -> node path
        self._answers: dict[str, list[Answer]] = {}

    def send(self, payload: dict[str, Any]) -> bool:
        """Start sending ``payload``; False when it is already on its way or every thread is busy."""
        bid_id, node = str(payload["bid_id"]), str(payload["node_path"])
        with self._lock:
            if bid_id in self._in_flight or len(self._in_flight) >= self._max:
                return False
            self._in_flight[bid_id] = node
        self._pool.submit(self._send, bid_id, node, payload)
        return True

    def _send(self, bid_id: str, node: str, payload: dict[str, Any]) -> None:
        try:
            outcome, body = self._submit(payload)
        except Exception as exc:  # noqa: BLE001 - a failing client is an unanswered bid: resent at its deadline
            outcome, body = "retry", {"error": f"sending the bid failed: {type(exc).__name__}: {exc}"}
        with self._lock:
            del self._in_flight[bid_id]
            self._answers.setdefault(node, []).append((payload, outcome, body))

    def take(self, node_path: str) -> list[Answer]:
        with self._lock:
            return self._answers.pop(node_path, [])

    def waiting(self, node_path: str) -> bool:
        """Whether an answer for the node is on its way or ready to be taken."""
        with self._lock:
            return bool(self._answers.get(node_path)) or node_path in self._in_flight.values()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
