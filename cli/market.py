"""``vpp market``: the simulated real-time market (price history CSV, or the running market API).

``vpp market --history-days N --out FILE.csv`` writes the last N days of
prices (up to ``--end``, default the current interval) as
``interval_start,price_usd_per_mwh`` (ISO 8601 UTC), the format ``vpp plan
--prices`` and ``vpp train --prices`` read.

The market's interval is ``--interval`` (``5m``, ``15m``, ``30m``, ``1h``, or
seconds; any multiple of 5 minutes that divides a day), by default the
setting ``market_interval_s`` (300 s), the one the autobidder checks every
price against: ``vpp market serve --interval 15m`` runs a 15-minute market.

``vpp market [serve]`` runs the market: it publishes each interval's accepted
bids to ``market.bids``, its price to ``market.prices`` and the awards of its
bids to ``market.awards`` as market
time passes (``--speed`` times the wall clock, from ``--start``), and serves
``POST /bids``, ``GET /bids/ID`` and ``GET /status`` on ``--host``/``--port``
(a free loopback port by default), to bearers of the setting ``market_token``
only (``vpp up`` generates one). Bids are bounded: a step of at most
``max_bid_w`` either way, for a node of the asset registry when it is reachable. It prints one JSON line with its URL,
then runs until Ctrl-C. With ``--journal FILE`` accepted bids and cleared
intervals survive a restart (JSON lines; see vpp/market/book.py). Prices
follow from ``--seed`` and the interval alone, so the history and the live
prices of one seed are one series.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import threading
import time
from pathlib import Path

from vpp.errors import UserError

__all__ = ["add_commands", "write_history"]

DEFAULT_PRICING_NODE = "SP15"


_UNITS_S = {"s": 1, "m": 60, "min": 60, "h": 3600}


def interval_s(text: str) -> int:
    """An argparse type: a market interval as ``15m``, ``1h``, ``900s`` or ``900`` (seconds), in seconds."""
    raw = text.strip().lower()
    number, unit = raw.rstrip("abcdefghijklmnopqrstuvwxyz"), raw.lstrip("0123456789.")
    try:
        value = float(number) * _UNITS_S[unit or "s"]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval: give e.g. 5m, 15m, 30m, 1h or 900 (seconds)") \
            from None
    if not value.is_integer() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole, positive number of seconds")
    return int(value)


def _checked_interval_ms(seconds: int) -> int:
    from devtools.market.prices import check_interval_ms

    try:
        return check_interval_ms(seconds * 1000)
    except ValueError as exc:
        raise UserError(f"--interval {seconds} s: {exc}") from None


def write_history(path: Path, end_ms: int, days: float, *, seed: int, model, interval_ms: int = 300_000) -> int:
    """Write ``days`` of prices of ``interval_ms`` ending before ``end_ms`` to a CSV; returns the number of rows."""
    from devtools.market.clearing import iso
    from devtools.market.prices import DAY_MS, price_series

    count = round(days * DAY_MS / interval_ms)
    start_ms = end_ms - count * interval_ms
    values = price_series(start_ms, count, seed=seed, model=model, interval_ms=interval_ms)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["interval_start", "price_usd_per_mwh"])
        for k, value in enumerate(values):
            writer.writerow([iso(start_ms + k * interval_ms), f"{value:.2f}"])
    return count


def _time_ms(text: str | None, flag: str) -> int:
    from devtools.market.clearing import BidRejected, parse_time_ms

    if text is None:
        return int(time.time() * 1000)
    try:
        return parse_time_ms(int(text) if text.strip().isdigit() else text, flag)
    except BidRejected as exc:
        raise UserError(str(exc)) from None


def _model(args):
    from devtools.market.prices import PriceModel

    try:
        return PriceModel(utc_offset_h=args.utc_offset_h)
    except ValueError as exc:
        raise UserError(f"--utc-offset-h: {exc}") from None


def cmd_market(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    model = _model(args)
    settings = load_settings(args)
    interval_ms = _checked_interval_ms(args.interval or settings.market_interval_s)
    if args.history_days is not None:
        if args.action == "serve":
            raise UserError("--history-days writes a CSV and exits: leave out 'serve'")
        if not args.out:
            raise UserError("--history-days needs --out FILE.csv")
        if args.history_days <= 0:
            raise UserError("--history-days must be positive")
        end_ms = _time_ms(args.end, "--end") // interval_ms * interval_ms
        rows = write_history(Path(args.out), end_ms, args.history_days, seed=args.seed, model=model,
                             interval_ms=interval_ms)
        print(json.dumps({"out": args.out, "intervals": rows, "interval_s": interval_ms // 1000, "seed": args.seed,
                          "pricing_node": args.pricing_node}))
        return 0
    return _serve(args, model, settings, interval_ms)


def _serve(args: argparse.Namespace, model, settings, interval_ms: int) -> int:
    from devtools.market.api import KafkaDelivery, MarketClock, MarketService, price_record
    from devtools.market.book import JournalError, OrderBook
    from devtools.market.prices import DAY_MS, price_series

    if args.speed <= 0:
        raise UserError("--speed must be positive")
    if args.gate_closure_s < 0:
        raise UserError("--gate-closure-s must be zero or positive")
    from devtools.market.nodes import AssetNodes

    start_ms = _time_ms(args.start, "--start")
    if not settings.market_token and not args.no_auth:
        raise UserError("the market API needs a token: set VPP_MARKET_TOKEN (or VPP_MARKET_TOKEN_FILE); `vpp up` "
                        "generates one for the local stack; or pass --no-auth")
    known_node = None if args.any_node else AssetNodes.connect(settings.postgres_dsn)
    if known_node is None and not args.any_node:
        print("market: no asset registry reachable: bids for any node are taken", file=sys.stderr, flush=True)
    try:
        book = OrderBook(args.pricing_node, round(args.gate_closure_s * 1000), args.journal,
                         max_bid_w=settings.max_bid_w, known_node=known_node, interval_ms=interval_ms)
    except (JournalError, OSError) as exc:
        raise UserError(f"cannot use the journal: {exc}") from None
    deliver = None
    if not args.no_publish:
        try:
            deliver = KafkaDelivery(settings)
            if args.backfill_days:
                count = round(args.backfill_days * DAY_MS / interval_ms)
                first = start_ms // interval_ms * interval_ms - count * interval_ms
                values = price_series(first, count, seed=args.seed, model=model, interval_ms=interval_ms)
                deliver.publish_prices([price_record(args.pricing_node, first + k * interval_ms, float(v), interval_ms)
                                        for k, v in enumerate(values)])
        except Exception as exc:  # noqa: BLE001 - the broker or registry is not there: say so
            raise UserError(f"cannot publish to the broker/registry ({exc}); is the stack up (vpp up)? "
                            "or run with --no-publish") from None
    try:
        service = MarketService(book, MarketClock(start_ms, args.speed), seed=args.seed, model=model,
                                deliver=deliver, host=args.host, port=args.port,
                                token=None if args.no_auth else settings.market_token)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with service:
        print(json.dumps({"url": service.url, **service.status()}), flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def add_commands(sub) -> None:
    from cli.common import add_common

    p = sub.add_parser(
        "market",
        help="simulated real-time market: price history CSV, or the market API publishing prices and awards",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("action", nargs="?", choices=("serve",), help="run the market (the default without --history-days)")
    p.add_argument("--seed", type=int, default=0, help="price series seed (default 0)")
    p.add_argument("--pricing-node", default=DEFAULT_PRICING_NODE, help=f"pricing node (default {DEFAULT_PRICING_NODE})")
    p.add_argument("--utc-offset-h", type=float, default=-8.0, help="node's local standard time offset (default -8)")
    p.add_argument("--interval", type=interval_s, default=None, metavar="LENGTH",
                   help="the market's interval: 5m, 15m, 30m, 1h, ... (default: the setting market_interval_s, 300 s)")
    history = p.add_argument_group("history")
    history.add_argument("--history-days", type=float, default=None, help="write this many days of past prices")
    history.add_argument("--out", default=None, metavar="FILE.csv", help="where --history-days writes")
    history.add_argument("--end", default=None, help="history ends before this ISO time / epoch ms (default now)")
    serve = p.add_argument_group("serve")
    serve.add_argument("--speed", type=float, default=1.0, help="market seconds per wall second (default 1)")
    serve.add_argument("--start", default=None, help="market time at start, ISO 8601 or epoch ms (default now)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    serve.add_argument("--gate-closure-s", type=float, default=300.0,
                       help="bids for an interval close this long before it starts (market seconds, default 300)")
    serve.add_argument("--journal", default=None, metavar="FILE.jsonl", help="keep accepted bids across restarts")
    serve.add_argument("--backfill-days", type=float, default=0.0, help="first publish this many days of past prices")
    serve.add_argument("--no-publish", action="store_true", help="serve HTTP only; do not publish to Kafka")
    serve.add_argument("--no-auth", action="store_true",
                       help="serve without the bearer token (the setting market_token) required")
    serve.add_argument("--any-node", action="store_true",
                       help="take bids for any node_path (default: the asset registry's nodes, when reachable)")
    p.set_defaults(func=cmd_market)

