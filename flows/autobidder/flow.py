"""Flow ``autobidder``: market prices + node aggregates -> forecast and optimize requests -> bids,
awards -> ``dispatch.commands``.

One input step reads ``market.prices``, ``market.awards``, ``fleet.aggregates`` and the two result
topics of the workers (``flows.forecast_worker.flow``, ``flows.optimize_worker.flow``); records are decoded
(dead letters to ``telemetry.dlq``; so is a price whose interval is not ``settings.market_interval_s``
long: a ``contract_violation`` saying both lengths) and grouped per batch by the bidding node
(``settings.autobidder_nodes``): a price goes to every node, the rest by their ``node_path``.
One stateful step keyed by node path runs ``flows.autobidder.logic.BidderState``; the bids it
decides go to the market API (``settings.market_url``) from a small thread pool
(``sinks.market_client.PooledBids``), so a slow market never holds up the worker and the other
nodes' workflows it carries. Each answer is fed back to its node's state as an event, on the
node's next batch or at a ``notify_at`` set a moment ahead while one is due; a bid not answered
by its resend deadline is sent again (the market keeps one bid per id). In replay and tests
(``wall_clock=None``) bids are sent inline and answered at once, so runs are deterministic.

Time: with Kafka the wall clock; a missing result is noticed by ``notify_at`` at its deadline. In
replay and in tests (``wall_clock=None``) time is the event time of the newest price, so a result
missing when a later price arrives falls back deterministically.

Horizon and history are times (``settings.autobidder_horizon_s``, a day by default; eight days of
prices), counted in the market's intervals by ``BidderParams.for_market``: 288 5-minute intervals,
24 hourly ones.

Restart: the state resumes from the last snapshot (with the settings' params now; another market
interval forgets the old grid's prices) and the input after it is read again. A
workflow decided again decides the same bid with the same id (the results are read in the same
order); the market answers a resend with 200 (or 409 when a fallback differed, and the bid it
holds is kept). Awards are input: one read again after a restart is recognized and not
dispatched twice, and none is lost because its offset is only committed with the snapshot.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from flows._common.environment import flow_from_environment
from flows.autobidder.logic import INTERVAL_MS, BidderParams, BidderState, Emitted, price_interval_problem
from flows._common.decode import dead_letter_message, dead_letters_only, decoded_messages, records_only
from sinks.dumps import base_topic
from sinks.market_client import InlineBids, MarketApi, PooledBids
from sinks.messages import OutMessage
from sinks.ports import KafkaPorts, Ports

__all__ = ["build_flow", "INPUT_TOPICS", "OUTPUT_TOPICS", "MarketApi", "BidderLogic", "to_events", "params_from", "flow"]

INPUT_TOPICS = ["market.prices", "market.awards", "fleet.aggregates", "autobidder.forecast.results",
                "autobidder.optimize.results"]
OUTPUT_TOPICS = ("autobidder.forecast.requests", "autobidder.optimize.requests", "dispatch.commands", "telemetry.dlq")
_KINDS = {"market.awards": "award", "fleet.aggregates": "aggregate", "autobidder.forecast.results": "forecast",
          "autobidder.optimize.results": "optimized"}
_AUTO: Any = object()


def params_from(settings) -> BidderParams:
    return BidderParams.for_market(settings.market_interval_s * 1000, horizon_ms=settings.autobidder_horizon_s * 1000,
                                   step_timeout_ms=round(settings.autobidder_step_timeout_s * 1000),
                                   state_wait_ms=round(settings.autobidder_state_wait_s * 1000),
                                   risk_quantiles=settings.autobidder_risk_quantiles)


def bidding_nodes(settings) -> tuple[str, ...]:
    return tuple(n.strip().strip("/") for n in settings.autobidder_nodes.split(",") if n.strip().strip("/"))


# -- stateless: decode, route to nodes ----------------------------------------------------------


def to_events(serde, dlq_topic: str, nodes: tuple[str, ...], msgs: list[KafkaSourceMessage],
              interval_ms: int = INTERVAL_MS) -> list[Any]:
    """Dead letters (OutMessage) and ``(node, (node, [(kind, record | [price records])]))`` in input order per node;
    a price of an interval other than ``interval_ms`` is a dead letter."""
    out: list[Any] = []
    groups: dict[str, list] = {}
    wanted = frozenset(nodes)

    def add(node: str, kind: str, record: dict) -> None:
        events = groups.get(node)
        if events is None:
            events = groups[node] = []
            out.append((node, (node, events)))
        if kind == "prices" and events and events[-1][0] == "prices":
            events[-1][1].append(record)
        else:
            events.append((kind, [record] if kind == "prices" else record))

    for msg, record in decoded_messages(serde, dlq_topic, msgs, out):
        topic = base_topic(msg.topic)
        if topic == "market.prices":
            problem = price_interval_problem(record, interval_ms)
            if problem is not None:
                out.append(dead_letter_message(serde, dlq_topic, msg, "contract_violation", problem))
                continue
            for node in nodes:
                add(node, "prices", record)
        else:
            node = str(record.get("node_path") or "").strip("/")
            if node in wanted:
                add(node, _KINDS[topic], record)
    return out


# -- stateful: one node's workflows ----------------------------------------------------------------


#: while a node's market answer is due, its step wakes this often to take it
ANSWER_POLL_S = 0.05


class BidderLogic(StatefulBatchLogic):
    """Adapter from bytewax to ``BidderState``: feeds events and market answers, sends bids, wakes at deadlines."""

    def __init__(self, resume: bytes | None, *, params: BidderParams, bids: InlineBids | PooledBids,
                 wall_clock: Callable[[], float] | None):
        self.state: BidderState | None = BidderState.loads(resume) if resume else None
        if self.state is not None:
            self.state.retune(params)
        self._params, self._bids, self._wall_clock = params, bids, wall_clock

    def _now_ms(self, event_ms: int = 0) -> int:
        if self._wall_clock is not None:
            return int(self._wall_clock() * 1000)
        prices = self.state.prices if self.state else None
        return max(max(prices) if prices else 0, event_ms)  # replay: event time of the newest price

    def _post(self, out: Emitted, done: int) -> int:
        """Send the bids decided since ``out.submissions[done]`` and feed back the answers that are in; the new count."""
        while done < len(out.submissions):
            payload = out.submissions[done]
            done += 1
            if not self._bids.send(payload):  # every sender busy, or this bid is on its way: send again later
                self.state.on_bid_response(int(payload["interval_start"]), "retry",
                                           {"error": "not sent: the market client is busy"}, self._now_ms(), out)
        self._take_answers(out)
        return done

    def _take_answers(self, out: Emitted) -> None:
        if self.state is None or not self.state.node_path:
            return
        for payload, outcome, body in self._bids.take(self.state.node_path):
            self.state.on_bid_response(int(payload["interval_start"]), outcome, body, self._now_ms(), out)

    def on_batch(self, values: list[tuple[str, list]]) -> tuple[list[Emitted], bool]:
        out, posted = Emitted(), 0
        self._take_answers(out)
        for node, events in values:
            if self.state is None or not self.state.node_path:
                self.state = BidderState(node, self._params)
            state = self.state
            for kind, value in events:
                if kind == "prices":
                    state.on_prices(value, self._now_ms(max(r["interval_start"] for r in value)), out)
                elif kind == "aggregate":
                    state.on_aggregate(value)
                elif kind == "forecast":
                    state.on_forecast(value, self._now_ms(), out)
                elif kind == "optimized":
                    state.on_optimized(value, self._now_ms(), out)
                else:
                    state.on_award(value, self._now_ms(), out)
                state.advance(self._now_ms(), out)
                posted = self._post(out, posted)  # before the next event: an award may follow its bid in one batch
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Emitted], bool]:
        out = Emitted()
        if self.state is not None:
            self._take_answers(out)
            self.state.advance(self._now_ms(), out)
            self._post(out, 0)
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Emitted], bool]:
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self._wall_clock is None or self.state is None:
            return None
        deadline = self.state.next_deadline_ms()
        if self.state.node_path and self._bids.waiting(self.state.node_path):  # take the answer soon after it comes
            soon_ms = int((self._wall_clock() + ANSWER_POLL_S) * 1000)
            deadline = soon_ms if deadline is None else min(deadline, soon_ms)
        return None if deadline is None else datetime.fromtimestamp(deadline / 1000, timezone.utc)

    def snapshot(self) -> bytes:
        return self.state.dumps() if self.state is not None else BidderState("", self._params).dumps()


# -- outputs --------------------------------------------------------------------------------------


def encode_outputs(serde, topics: dict[str, str], items: list[tuple[str, Emitted]]) -> list[OutMessage]:
    out: list[OutMessage] = []
    for _, emitted in items:
        for kind, records, key in (("forecast", emitted.forecast_requests, "node_path"),
                                   ("optimize", emitted.optimize_requests, "node_path"),
                                   ("command", emitted.commands, "node_path")):
            if records:
                topic = topics[kind]
                values = serde.encode_many(topic, records)
                out.extend(OutMessage(topic, r[key], v) for r, v in zip(records, values))
    return out


def store_items(items: list[tuple[str, Emitted]]) -> list[tuple[str, dict]]:
    """``("fact" | "workflow", record)`` for the PostgreSQL store, in emission order."""
    out: list[tuple[str, dict]] = []
    for _, emitted in items:
        out.extend(("fact", r) for r in emitted.facts)
        out.extend(("workflow", r) for r in emitted.workflows)
    return out


def build_flow(settings, *, ports: Ports | None = None, submit: Callable[[dict], tuple[str, dict]] | None = None,
               store: Any = _AUTO, wall_clock: Callable[[], float] | None = _AUTO,
               params: BidderParams | None = None) -> Dataflow:
    """``ports`` default to the broker; ``submit`` (one bid -> ``(outcome, body)``) to
    ``MarketApi(settings.market_url, token=settings.market_token)``; ``store`` to PostgreSQL with
    Kafka ports (none otherwise); ``wall_clock`` to ``time.time`` with Kafka ports. With a wall
    clock bids are sent from a thread pool (``PooledBids``), without one inline."""
    kafka = ports is None or isinstance(ports, KafkaPorts)
    ports = ports or KafkaPorts(settings)
    submit = submit or MarketApi(settings.market_url, token=settings.market_token)
    if store is _AUTO:
        from sinks.autobidder_store import AutobidderStore

        store = AutobidderStore(settings.postgres_dsn) if kafka else None
    if wall_clock is _AUTO:
        wall_clock = time.time if kafka else None
    params = params or params_from(settings)
    bids = InlineBids(submit) if wall_clock is None else PooledBids(submit)
    nodes = bidding_nodes(settings)
    topics = {"forecast": ports.topic("autobidder.forecast.requests"),
              "optimize": ports.topic("autobidder.optimize.requests"), "command": ports.topic("dispatch.commands")}

    flow = Dataflow("autobidder")
    msgs = ports.read(flow, "autobidder_in", INPUT_TOPICS)
    items = op.flat_map_batch("to_events", msgs, partial(to_events, ports.serde, ports.topic("telemetry.dlq"), nodes,
                                                         interval_ms=params.interval_ms))
    events = op.flat_map_batch("events", items, records_only)
    dead = op.flat_map_batch("dead_letters", items, dead_letters_only)
    emitted = op.stateful_batch("workflows", events, partial(BidderLogic, params=params, bids=bids,
                                                             wall_clock=wall_clock))
    encoded = op.flat_map_batch("encode", emitted, partial(encode_outputs, ports.serde, topics))
    ports.write("autobidder_out", op.merge("with_dead_letters", encoded, dead))
    if store is not None:
        op.output("autobidder_store", op.flat_map_batch("store_rows", emitted, store_items), store)
    return flow


__getattr__ = flow_from_environment(build_flow)
