"""The market's rules, pure: what a valid bid is, when an interval's gate closes, what a bid is awarded.

A bid offers price-quantity steps for one market interval (5 minutes unless
the market says otherwise: ``interval_ms``, e.g. 15 minutes or an hour). ``quantity_w >
0`` sells (discharges) that many watts if the clearing price is at or above
the step's price; ``quantity_w < 0`` buys (charges) if the clearing price is
at or below it (the sign convention of ``models.bids``). Every buy price must
lie strictly below every sell price, so that the awarded quantity is a
non-decreasing function of the clearing price and the curve never buys and
sells at once. The award is the curve evaluated at the clearing price
(``awarded_w``): the market is a price-taker's market, the clearing price is
the node's real-time price and bids do not move it.

Gate closure: a bid for the interval starting at ``S`` is accepted while the
market time is before ``S - gate_closure_ms``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.market.prices import INTERVAL_MS
from models.price_series import describe_interval

__all__ = [
    "MAX_PAIRS",
    "BidRejected",
    "MarketBid",
    "awarded_w",
    "check_gate",
    "clear_interval",
    "gate_closes_at_ms",
    "iso",
    "parse_bid",
    "parse_time_ms",
]

MAX_PAIRS = 20
_MAX_ID = 200


class BidRejected(ValueError):
    """A bid the market refuses: ``status`` is the HTTP status, the message says what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MarketBid:
    """An accepted bid; ``pairs`` are ``(price_usd_per_mwh, quantity_w)`` sorted by price."""

    bid_id: str
    node_path: str
    pricing_node: str
    interval_start_ms: int
    pairs: tuple[tuple[float, float], ...]
    submitted_at_ms: int

    def same_content(self, other: "MarketBid") -> bool:
        """Whether two bids say the same thing (the submission time does not count)."""
        return (self.bid_id, self.node_path, self.pricing_node, self.interval_start_ms, self.pairs) == (
            other.bid_id,
            other.node_path,
            other.pricing_node,
            other.interval_start_ms,
            other.pairs,
        )

    def as_record(self) -> dict[str, Any]:
        """The ``market_bid`` Avro record (timestamps in epoch ms)."""
        return {
            "bid_id": self.bid_id,
            "node_path": self.node_path,
            "pricing_node": self.pricing_node,
            "interval_start": self.interval_start_ms,
            "pairs": [{"price_usd_per_mwh": p, "quantity_w": q} for p, q in self.pairs],
            "submitted_at": self.submitted_at_ms,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "MarketBid":
        return cls(
            bid_id=record["bid_id"],
            node_path=record["node_path"],
            pricing_node=record["pricing_node"],
            interval_start_ms=int(record["interval_start"]),
            pairs=tuple((float(p["price_usd_per_mwh"]), float(p["quantity_w"])) for p in record["pairs"]),
            submitted_at_ms=int(record["submitted_at"]),
        )


def iso(ms: int) -> str:
    """ISO 8601 UTC with a ``Z`` (what the API answers with)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def parse_time_ms(value: Any, name: str = "interval_start") -> int:
    """Epoch ms from an ISO 8601 string (``Z`` or an offset; naive means UTC) or an integer of epoch ms."""
    if isinstance(value, bool):
        raise BidRejected(422, f"{name} must be an ISO 8601 time or epoch milliseconds, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return round(when.timestamp() * 1000)
    raise BidRejected(422, f"{name} must be an ISO 8601 time (e.g. 2026-06-01T12:05:00Z) or epoch milliseconds, "
                           f"got {_shown(value)}")


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BidRejected(422, f"{name} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_ID:
        raise BidRejected(422, f"{name} is longer than {_MAX_ID} characters")
    return value


def _number(value: Any, where: str) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond any double (JSON allows 400 digits)
        number = math.nan
    if not math.isfinite(number):
        raise BidRejected(422, f"{where} must be a finite number, got {_shown(value)}")
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _pairs(value: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not value:
        raise BidRejected(422, "pairs must be a non-empty list of {price_usd_per_mwh, quantity_w}")
    if len(value) > MAX_PAIRS:
        raise BidRejected(422, f"pairs has {len(value)} steps; at most {MAX_PAIRS} are accepted")
    out = []
    for k, pair in enumerate(value):
        if not isinstance(pair, Mapping):
            raise BidRejected(422, f"pairs[{k}] must be an object {{price_usd_per_mwh, quantity_w}}")
        price = _number(pair.get("price_usd_per_mwh"), f"pairs[{k}].price_usd_per_mwh")
        quantity = _number(pair.get("quantity_w"), f"pairs[{k}].quantity_w")
        if quantity == 0:
            raise BidRejected(422, f"pairs[{k}].quantity_w is 0: leave the step out (> 0 sells, < 0 buys)")
        out.append((price, quantity))
    buys = [p for p, q in out if q < 0]
    sells = [p for p, q in out if q > 0]
    if buys and sells and max(buys) >= min(sells):
        raise BidRejected(
            422,
            f"the curve crosses itself: it buys up to {max(buys)} $/MWh and sells from {min(sells)} $/MWh; "
            "every buy price must lie below every sell price",
        )
    return tuple(sorted(out))


#: How far from market time an interval may be bid for (either way: a past one is refused by its gate).
#: Beyond it a start is a mistake, and one beyond the year 9999 cannot even be shown or kept.
MAX_BID_AHEAD_MS = 7 * 86_400_000


def parse_bid(payload: Any, *, pricing_node: str, submitted_at_ms: int, interval_ms: int = INTERVAL_MS) -> MarketBid:
    """The bid in a request body (a decoded JSON object); ``BidRejected`` saying what is wrong.

    400 when the body is not a JSON object, 422 for a field that is missing or
    wrong, an interval start off the market's grid of ``interval_ms`` or more than ``MAX_BID_AHEAD_MS``
    from market time, or another pricing node.
    """
    if not isinstance(payload, Mapping):
        raise BidRejected(400, "the body must be a JSON object: {bid_id, node_path, pricing_node, interval_start, pairs}")
    bid_id = _text(payload, "bid_id")
    node_path = _text(payload, "node_path")
    node = _text(payload, "pricing_node")
    if node != pricing_node:
        raise BidRejected(422, f"pricing_node {node!r} is not cleared here: this market clears {pricing_node!r}")
    if "interval_start" not in payload:
        raise BidRejected(422, f"interval_start is missing: give the start of the {_length(interval_ms)} interval bid for")
    start_ms = parse_time_ms(payload["interval_start"])
    if not submitted_at_ms - MAX_BID_AHEAD_MS <= start_ms <= submitted_at_ms + MAX_BID_AHEAD_MS:
        raise BidRejected(422, f"interval_start {_shown(payload['interval_start'])} is more than "
                               f"{MAX_BID_AHEAD_MS // 86_400_000} days from market time {iso(submitted_at_ms)}: "
                               "bid for an interval of the coming days")
    if start_ms % interval_ms:
        raise BidRejected(422, f"interval_start {iso(start_ms)} is not the start of a {_length(interval_ms)} interval: "
                               f"this market's intervals start every "
                               f"{describe_interval(timedelta(milliseconds=interval_ms))} from midnight UTC")
    return MarketBid(bid_id, node_path, node, start_ms, _pairs(payload.get("pairs")), submitted_at_ms)


def check_limits(bid: MarketBid, *, max_bid_w: float | None = None,
                 known_node: Callable[[str], bool] | None = None) -> None:
    """``BidRejected`` (422) for a step of more than ``max_bid_w`` either way or a node ``known_node`` does not know."""
    if max_bid_w is not None:
        for _, quantity in bid.pairs:
            if abs(quantity) > max_bid_w:
                raise BidRejected(422, f"a step of {quantity:g} W exceeds this market's limit of {max_bid_w:g} W "
                                       "per step either way")
    if known_node is not None and not known_node(bid.node_path):
        raise BidRejected(422, f"node_path {bid.node_path!r} is not a node of the asset registry: bid for a region "
                               "or device path it holds, e.g. 'us/ca'")


def gate_closes_at_ms(interval_start_ms: int, gate_closure_ms: int) -> int:
    """The market time from which bids for the interval are refused."""
    return interval_start_ms - gate_closure_ms


def check_gate(bid: MarketBid, now_ms: int, gate_closure_ms: int) -> None:
    """``BidRejected`` (422) when the bid's interval gate is closed at market time ``now_ms``."""
    closes = gate_closes_at_ms(bid.interval_start_ms, gate_closure_ms)
    if now_ms >= closes:
        raise BidRejected(
            422,
            f"gate closed for the interval starting {iso(bid.interval_start_ms)}: bids close "
            f"{gate_closure_ms // 1000} s before the interval, at {iso(closes)}, and market time is {iso(now_ms)}; "
            f"bid for an interval starting after {iso(now_ms + gate_closure_ms)}",
        )


def awarded_w(pairs: Iterable[tuple[float, float]], clearing_price_usd_per_mwh: float) -> float:
    """The bid curve at the clearing price: sells priced at or below it plus buys priced at or above it."""
    total = 0.0
    for price, quantity in pairs:
        if (quantity > 0 and price <= clearing_price_usd_per_mwh) or (quantity < 0 and price >= clearing_price_usd_per_mwh):
            total += quantity
    return total


def _length(interval_ms: int) -> str:
    minutes = interval_ms / 60_000
    return f"{minutes / 60:g}-hour" if minutes % 60 == 0 else f"{minutes:g}-minute"


def clear_interval(bids: Iterable[MarketBid], interval_start_ms: int, clearing_price_usd_per_mwh: float,
                   interval_ms: int = INTERVAL_MS) -> list[dict]:
    """The ``market_award`` records of the interval's bids (one per bid, zero awards included), by bid id."""
    return [
        {
            "bid_id": bid.bid_id,
            "node_path": bid.node_path,
            "interval_start": interval_start_ms,
            "interval_end": interval_start_ms + interval_ms,
            "clearing_price_usd_per_mwh": clearing_price_usd_per_mwh,
            "awarded_w": awarded_w(bid.pairs, clearing_price_usd_per_mwh),
        }
        for bid in sorted(bids, key=lambda b: b.bid_id)
        if bid.interval_start_ms == interval_start_ms
    ]
