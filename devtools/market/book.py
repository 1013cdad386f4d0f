"""The market's order book: accepted bids and cleared intervals, in memory, with an optional journal.

Thread-safe (one lock): the HTTP handlers submit and read, the clearing loop
clears. With a journal file (JSON lines, appended and fsynced before an
answer or a clearing is confirmed), a restarted market reads it back and
knows every accepted bid and every interval it has cleared: a resent bid
gets the same answer, and no interval is cleared twice. Lines:

* ``{"type": "bid", "bid": <market_bid record>}`` when a bid is accepted;
* ``{"type": "cleared", "interval_start": ms, "clearing_price_usd_per_mwh": p,
  "awards": [<market_award record>, ...]}`` after the interval's price and
  awards were delivered to the broker.

A torn last line (the process died while writing it) is ignored; any other
unreadable line stops the start with a message naming the line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.market.clearing import (
    BidRejected,
    MarketBid,
    check_gate,
    check_limits,
    clear_interval,
    gate_closes_at_ms,
    iso,
    parse_bid,
)
from devtools.market.prices import INTERVAL_MS, check_interval_ms

__all__ = ["JournalError", "OrderBook"]


class JournalError(RuntimeError):
    """The journal file cannot be read back; the message names the line."""


class OrderBook:
    """Bids by id, awards by bid id, cleared intervals; see the module docstring."""

    def __init__(self, pricing_node: str, gate_closure_ms: int, journal: str | Path | None = None, *,
                 max_bid_w: float | None = None, known_node: Callable[[str], bool] | None = None,
                 interval_ms: int = INTERVAL_MS):
        if gate_closure_ms < 0:
            raise ValueError(f"gate closure must be zero or positive, got {gate_closure_ms} ms")
        self.interval_ms = check_interval_ms(interval_ms)  # the market's interval: bids on its grid, awards as long
        self.pricing_node = pricing_node
        self.gate_closure_ms = gate_closure_ms
        self.max_bid_w, self.known_node = max_bid_w, known_node  # new bids only: a resent bid keeps its answer
        self._lock = threading.Lock()
        self._bids: dict[str, MarketBid] = {}
        self._awards: dict[str, dict] = {}
        self._cleared: dict[int, float] = {}
        self._journal_path = Path(journal) if journal else None
        self._journal = None
        if self._journal_path is not None:
            self._replay(self._journal_path)
            self._journal = self._journal_path.open("a", encoding="utf-8")

    # -- journal ---------------------------------------------------------------------
    def _replay(self, path: Path) -> None:
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._apply(entry)
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):
                    break  # torn last write
                raise JournalError(f"{path}:{number}: unreadable journal line ({exc}); fix or move the file") from exc

    def _apply(self, entry: dict[str, Any]) -> None:
        if entry["type"] == "bid":
            bid = MarketBid.from_record(entry["bid"])
            self._bids[bid.bid_id] = bid
        elif entry["type"] == "cleared":
            self._cleared[int(entry["interval_start"])] = float(entry["clearing_price_usd_per_mwh"])
            for award in entry["awards"]:
                self._awards[award["bid_id"]] = award
        else:
            raise ValueError(f"unknown entry type {entry['type']!r}")

    def _write(self, entry: dict[str, Any]) -> None:
        if self._journal is None:
            return
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    # -- bids ----------------------------------------------------------------------------
    def submit(self, payload: Any, now_ms: int) -> tuple[int, dict]:
        """``(status, body)`` for a submitted bid: 201 accepted, 200 the same bid again, 409, 422 or 400.

        A bid id already accepted with the same content gets 200 and the bid's
        current state, even after its gate closed (a retry must not fail);
        with different content it gets 409.
        """
        try:
            bid = parse_bid(payload, pricing_node=self.pricing_node, submitted_at_ms=now_ms, interval_ms=self.interval_ms)
        except BidRejected as exc:
            return exc.status, {"error": str(exc)}
        if bid.bid_id not in self._bids:  # a new bid's limits, outside the lock: the node check may read PostgreSQL
            try:
                check_limits(bid, max_bid_w=self.max_bid_w, known_node=self.known_node)
            except BidRejected as exc:
                return exc.status, {"error": str(exc)}
        with self._lock:
            known = self._bids.get(bid.bid_id)
            if known is not None:
                if known.same_content(bid):
                    return 200, self._view(known)
                return 409, {
                    "error": f"bid_id {bid.bid_id!r} was already accepted with other content; "
                    "a bid cannot be changed: send a new bid_id",
                    "bid": self._view(known),
                }
            try:
                check_gate(bid, now_ms, self.gate_closure_ms)
            except BidRejected as exc:
                return exc.status, {"error": str(exc)}
            if bid.interval_start_ms in self._cleared:  # only with a gate of 0 and a late clock
                return 422, {"error": f"the interval starting {iso(bid.interval_start_ms)} is already cleared"}
            self._write({"type": "bid", "bid": bid.as_record()})
            self._bids[bid.bid_id] = bid
            return 201, self._view(bid)

    def get(self, bid_id: str) -> dict | None:
        """The bid's current state (``status`` "accepted" or "cleared" with its award), or ``None``."""
        with self._lock:
            bid = self._bids.get(bid_id)
            return None if bid is None else self._view(bid)

    def _view(self, bid: MarketBid) -> dict:
        award = self._awards.get(bid.bid_id)
        return {
            "bid_id": bid.bid_id,
            "status": "cleared" if award is not None else "accepted",
            "node_path": bid.node_path,
            "pricing_node": bid.pricing_node,
            "interval_start": iso(bid.interval_start_ms),
            "interval_start_ms": bid.interval_start_ms,
            "gate_closes_at": iso(gate_closes_at_ms(bid.interval_start_ms, self.gate_closure_ms)),
            "pairs": [{"price_usd_per_mwh": p, "quantity_w": q} for p, q in bid.pairs],
            "submitted_at": iso(bid.submitted_at_ms),
            "award": None if award is None else {
                "clearing_price_usd_per_mwh": award["clearing_price_usd_per_mwh"],
                "awarded_w": award["awarded_w"],
            },
        }

    # -- clearing ---------------------------------------------------------------------------
    def is_cleared(self, interval_start_ms: int) -> bool:
        with self._lock:
            return interval_start_ms in self._cleared

    def last_cleared(self) -> int | None:
        """The start of the latest interval cleared (journaled ones included), or None."""
        with self._lock:
            return max(self._cleared, default=None)

    def uncleared_intervals_before(self, before_ms: int) -> list[int]:
        """Intervals with accepted bids, starting before ``before_ms``, never cleared (the market was down)."""
        with self._lock:
            return sorted({b.interval_start_ms for b in self._bids.values()
                           if b.interval_start_ms < before_ms and b.interval_start_ms not in self._cleared})

    def bids_for(self, interval_start_ms: int) -> list[dict]:
        """The ``market_bid`` records accepted for the interval, by bid id."""
        with self._lock:
            bids = [b for b in self._bids.values() if b.interval_start_ms == interval_start_ms]
        return [b.as_record() for b in sorted(bids, key=lambda b: b.bid_id)]

    def awards_for(self, interval_start_ms: int, clearing_price_usd_per_mwh: float) -> list[dict]:
        """The interval's awards at this price (not yet recorded: ``commit_clearing`` does that)."""
        with self._lock:
            bids = [b for b in self._bids.values() if b.interval_start_ms == interval_start_ms]
        return clear_interval(bids, interval_start_ms, clearing_price_usd_per_mwh, self.interval_ms)

    def commit_clearing(self, interval_start_ms: int, clearing_price_usd_per_mwh: float, awards: list[dict]) -> None:
        """Record a clearing whose price and awards were delivered."""
        entry = {
            "type": "cleared",
            "interval_start": interval_start_ms,
            "clearing_price_usd_per_mwh": clearing_price_usd_per_mwh,
            "awards": awards,
        }
        with self._lock:
            self._write(entry)
            self._apply(entry)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"bids": len(self._bids), "awards": len(self._awards), "cleared_intervals": len(self._cleared)}


#: Type of the function the clearing loop calls to deliver one interval's price and awards.
Deliver = Callable[[dict, list[dict]], None]
