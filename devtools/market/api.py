"""The running market: its clock, the clearing loop publishing to Kafka, and the HTTP API.

HTTP (JSON in and out; a Starlette app on uvicorn, ``vpp.asgi``: framing, connection and body
limits are the server's; with a token, every request needs ``Authorization: Bearer <token>``,
else 401). A new bid with a step beyond the book's ``max_bid_w`` or for a node the asset
registry does not know is a 422 (``devtools.market.clearing.check_limits``):

* ``POST /bids`` with ``{bid_id, node_path, pricing_node, interval_start
  (ISO 8601 or epoch ms), pairs: [{price_usd_per_mwh, quantity_w}]}``
  (``quantity_w > 0`` sells): 201 and the bid's state when accepted; 200 and
  its current state for the same ``bid_id`` and content again; 409 for the
  same ``bid_id`` with other content; 422 for an invalid bid or a closed gate
  (``{"error": "..."}`` says what to fix); 400 for a body that is not a JSON
  object.
* ``GET /bids/{bid_id}``: 200 with ``status`` "accepted" or "cleared" (then
  ``award``: ``clearing_price_usd_per_mwh``, ``awarded_w``), 404 unknown.
* ``GET /status``: pricing node, market time, speed, gate closure, the first
  interval still open for bids, counts.

Market time runs ``speed`` times faster than the wall clock from ``start_ms``.
Intervals are the book's ``interval_ms`` long (5 minutes unless given; 15 minutes,
an hour, ...) on a grid from midnight UTC. When market time reaches an interval's start, the loop takes that interval's
price from the generator, evaluates every bid for it at that price, and
delivers the bids it accepted for the interval (``market.bids``, key = bid
id: the market's record of what was bid, the gate having closed on them),
the price (``market.prices``, key = pricing node) and the awards
(``market.awards``, key = bid id, one per bid, zero awards included). Only a
delivered clearing is recorded; a failed delivery is retried (at least once
on the topics). Intervals with journaled bids that were never cleared (the
market was down) are cleared at start.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vpp.asgi import BackgroundServer, BearerToken, BodyLimits, ServerLimits
from devtools.market.book import OrderBook
from devtools.market.clearing import iso
from devtools.market.prices import INTERVAL_MS, PriceModel, price_series

__all__ = ["KafkaDelivery", "MarketClock", "MarketService", "build_app", "price_record"]

LIMITS = ServerLimits(max_body_bytes=64 * 1024)


@dataclass
class MarketClock:
    """Market time: ``start_ms`` when created, then ``speed`` ms of market time per wall ms."""

    start_ms: int
    speed: float = 1.0
    wall: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be positive, got {self.speed}")
        self._wall_start = self.wall()

    def now_ms(self) -> int:
        return self.start_ms + int((self.wall() - self._wall_start) * 1000 * self.speed)

    def wall_seconds_until(self, market_ms: int) -> float:
        return max(0.0, (market_ms - self.now_ms()) / 1000 / self.speed)


def price_record(pricing_node: str, interval_start_ms: int, price_usd_per_mwh: float,
                 interval_ms: int = INTERVAL_MS) -> dict:
    """The ``market_price`` Avro record of one interval (its length is ``interval_end - interval_start``)."""
    return {
        "pricing_node": pricing_node,
        "interval_start": interval_start_ms,
        "interval_end": interval_start_ms + interval_ms,
        "price_usd_per_mwh": price_usd_per_mwh,
    }


class KafkaDelivery:
    """Delivers bids, prices and awards as Avro (registry serde); raises unless every message was acknowledged."""

    def __init__(self, settings, *, flush_timeout_s: float = 15.0):
        from confluent_kafka import Producer

        from sinks.kafka import producer_config
        from vpp.serde import Serde

        self._serde = Serde.from_settings(settings)
        self._producer = Producer(producer_config(settings))
        self._prices_topic = settings.topic("market.prices")
        self._awards_topic = settings.topic("market.awards")
        self._bids_topic = settings.topic("market.bids")
        self._flush_timeout_s = flush_timeout_s
        self._errors: list[str] = []

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()} key={msg.key()!r}: {err}")

    def _produce(self, topic: str, key: str, record: dict, timestamp_ms: int) -> None:
        value = self._serde.encode(topic, record)
        while True:
            try:
                self._producer.produce(topic, value, key.encode(), timestamp=timestamp_ms, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: serve callbacks and retry
                self._producer.poll(0.1)

    def publish_prices(self, records: list[dict]) -> None:
        for record in records:
            self._produce(self._prices_topic, record["pricing_node"], record, record["interval_start"])
        self._confirm()

    def __call__(self, price: dict, awards: list[dict], bids: list[dict]) -> None:
        for bid in bids:
            self._produce(self._bids_topic, bid["bid_id"], bid, bid["submitted_at"])
        self._produce(self._prices_topic, price["pricing_node"], price, price["interval_start"])
        for award in awards:
            self._produce(self._awards_topic, award["bid_id"], award, award["interval_start"])
        self._confirm()

    def _confirm(self) -> None:
        remaining = self._producer.flush(self._flush_timeout_s)
        errors, self._errors = self._errors, []
        if remaining:
            raise RuntimeError(f"{remaining} messages not delivered within {self._flush_timeout_s} s")
        if errors:
            raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")


class MarketService:
    """The clearing loop and the HTTP server around an ``OrderBook``; ``start()``, then ``stop()``.

    With ``token`` every request needs ``Authorization: Bearer <token>`` (401 otherwise).
    ``deliver(price_record, awards, bids)`` is called for every interval (``None``:
    keep results in memory only, for a market without a broker).
    """

    def __init__(
        self,
        book: OrderBook,
        clock: MarketClock,
        *,
        seed: int = 0,
        model: PriceModel = PriceModel(),
        deliver: Callable[[dict, list[dict], list[dict]], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
        retry_s: float = 1.0,
        token: str | None = None,
    ):
        self.book = book
        self.clock = clock
        self.seed = seed
        self.model = model
        self._deliver = deliver
        self._log = log
        self._retry_s = retry_s
        self._stop = threading.Event()
        self.interval_ms = book.interval_ms
        self._next_ms = clock.now_ms() // self.interval_ms * self.interval_ms
        self._last_cleared_ms: int | None = book.last_cleared()  # a journal's, after a restart
        self._http = BackgroundServer(build_app(self, token), host, port, LIMITS, name="market-http")
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self._http.url

    def price_of(self, interval_start_ms: int) -> float:
        return float(price_series(interval_start_ms, 1, seed=self.seed, model=self.model, interval_ms=self.interval_ms)[0])

    # -- clearing --------------------------------------------------------------------
    def clear(self, interval_start_ms: int) -> list[dict]:
        """Clear one interval (deliver, then record); returns its awards. Raises if delivery fails."""
        price = self.price_of(interval_start_ms)
        awards = self.book.awards_for(interval_start_ms, price)
        if self._deliver is not None:
            self._deliver(price_record(self.book.pricing_node, interval_start_ms, price, self.interval_ms), awards,
                          self.book.bids_for(interval_start_ms))
        self.book.commit_clearing(interval_start_ms, price, awards)
        self._last_cleared_ms = max(interval_start_ms, self._last_cleared_ms or interval_start_ms)
        return awards

    def _catch_up(self) -> None:
        for start_ms in self.book.uncleared_intervals_before(self._next_ms):
            self._retrying(start_ms)
            self._log(f"market: cleared {iso(start_ms)} late (bids journaled while the market was down)")

    def _retrying(self, start_ms: int) -> None:
        while not self._stop.is_set():
            try:
                self.clear(start_ms)
                return
            except Exception as exc:  # noqa: BLE001 - any delivery failure is retried, and said
                self._log(f"market: clearing {iso(start_ms)} failed ({exc}); retrying in {self._retry_s} s")
                self._stop.wait(self._retry_s)

    def _run(self) -> None:
        self._catch_up()
        while not self._stop.is_set():
            wait_s = self.clock.wall_seconds_until(self._next_ms)
            if wait_s > 0:
                self._stop.wait(min(wait_s, 0.5))
                continue
            if not self.book.is_cleared(self._next_ms):
                self._retrying(self._next_ms)
            self._next_ms += self.interval_ms

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "MarketService":
        self._http.start()
        self._threads = [threading.Thread(target=self._run, name="market-clearing", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._http.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self.book.close()

    def __enter__(self) -> "MarketService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def status(self) -> dict:
        now = self.clock.now_ms()
        step = self.interval_ms
        first_open = (now + self.book.gate_closure_ms) // step * step + step
        return {
            "pricing_node": self.book.pricing_node,
            "interval_s": step // 1000,
            "market_time": iso(now),
            "market_time_ms": now,
            "speed": self.clock.speed,
            "gate_closure_s": self.book.gate_closure_ms / 1000,
            "first_open_interval_start": iso(first_open),
            "first_open_interval_start_ms": first_open,
            "last_cleared_interval_start": None if self._last_cleared_ms is None else iso(self._last_cleared_ms),
            **self.book.stats(),
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(service: "MarketService", token: str | None = None) -> Starlette:
    """The market's HTTP API over ``service`` (its book and clock); with ``token``, only for its bearers."""

    async def submit(request: Request) -> JSONResponse:
        try:
            payload = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        status, body = await run_in_threadpool(service.book.submit, payload, service.clock.now_ms())
        return JSONResponse(body, status_code=status)

    async def get_bid(request: Request) -> JSONResponse:
        bid_id = request.path_params["bid_id"]
        found = await run_in_threadpool(service.book.get, bid_id)
        return _error(404, f"no bid {bid_id!r}") if found is None else JSONResponse(found)

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(service.status))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return _error(404, f"no such resource {request.url.path}: POST /bids, GET /bids/ID or /status")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not supported: POST /bids, GET /bids/ID or /status")
        return _error(exc.status_code, str(exc.detail))

    return Starlette(
        routes=[Route("/bids", submit, methods=["POST"]), Route("/bids/{bid_id}", get_bid, methods=["GET"]),
                Route("/status", status, methods=["GET"])],
        middleware=([Middleware(BearerToken, token=token, error=_error)] if token else []) + [
            Middleware(BodyLimits, max_body_bytes=LIMITS.max_body_bytes, body_timeout_s=LIMITS.body_timeout_s,
                       error=_error)],
        exception_handlers={HTTPException: http_error},
    )
