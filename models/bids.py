"""Turning the first interval of a schedule into a market bid: 1 to 3 price-quantity blocks.

Sign convention: ``quantity_w > 0`` is an offer to SELL (discharge) that many
watts, dispatched when the clearing price is at or above its price (a floor);
``quantity_w < 0`` is a bid to BUY (charge), dispatched when the clearing price
is at or below its price (a cap). Blocks add up: ``net_quantity_w(bid, price)``
is the battery's net dispatch at a clearing price, non-decreasing in the price
because every buy price lies strictly below every sell price.

The rule, with ``p_0`` the forecast for the bid interval, ``future`` the
forecasts after it, ``eta`` the round-trip efficiency and ``deg`` the
degradation cost ($/MWh discharged):

1. The planned block. If the plan discharges ``d_0 > 0``: sell ``d_0`` at
   ``min(p_0, deg + min(future) / eta)``, the price that still covers buying the
   energy back at the cheapest forecast (or just ``deg`` when there is no
   future) and never above ``p_0``, so the plan clears at its own forecast.
   If it charges ``c_0 > 0``: buy ``c_0`` up to ``max(p_0, eta (max(future) -
   deg))``, what the energy is worth sold at the best forecast after losses and
   degradation (``p_0`` when there is no future).
2. Extra blocks, beyond the plan, sized so that the REST of the plan stays
   feasible unchanged (extra discharge lowers every later stored energy by the
   same amount, extra charge raises it): an extra sale of up to
   ``min(Pd - d_0, sqrt(eta) (min_{t>=1} E_t - max(reserve, final)) / h)`` W at
   ``max(max(prices), deg)``, a price at or above every forecast, and an extra
   purchase of up to ``min(Pc - c_0, (C - max_{t>=1} E_t) / (sqrt(eta) h))`` W
   at ``min(0, min(prices))``, where stored energy costs nothing to hold. Extra
   sales are offered only when the plan does not charge, extra purchases only
   when it does not discharge; an extra block smaller than 1 W is left out, and
   one at the same price as the planned block is merged into it. Should an
   idle plan's extra sale and purchase cross (every forecast 0 and no
   degradation cost) only the purchase is kept.

An idle plan with no room for extras gives an empty bid (no participation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from models.optimize import INTERVAL, Battery, PricePoint, Schedule

__all__ = ["Bid", "BidPair", "build_bid", "net_quantity_w"]

# Extra blocks smaller than this are solver noise, not an offer.
_MIN_BLOCK_W = 1.0


@dataclass(frozen=True)
class BidPair:
    """One block: sell (``quantity_w > 0``) at or above, or buy (``< 0``) at or below, the price."""

    price_usd_per_mwh: float
    quantity_w: float


@dataclass(frozen=True)
class Bid:
    """The blocks for one interval, sorted by price (buys first, then sells)."""

    interval_start: datetime
    pairs: tuple[BidPair, ...]


def net_quantity_w(bid: Bid, clearing_price_usd_per_mwh: float) -> float:
    """The battery's net dispatch (W, positive = discharge) if the market clears at this price."""
    total = 0.0
    for pair in bid.pairs:
        if pair.quantity_w > 0 and clearing_price_usd_per_mwh >= pair.price_usd_per_mwh:
            total += pair.quantity_w
        elif pair.quantity_w < 0 and clearing_price_usd_per_mwh <= pair.price_usd_per_mwh:
            total += pair.quantity_w
    return total


def _merge(blocks: list[BidPair]) -> tuple[BidPair, ...]:
    merged: dict[tuple[bool, float], float] = {}
    for block in blocks:
        key = (block.quantity_w > 0, block.price_usd_per_mwh)
        merged[key] = merged.get(key, 0.0) + block.quantity_w
    return tuple(BidPair(price, quantity) for (_, price), quantity in sorted(merged.items(), key=lambda kv: kv[0][1]))


def build_bid(schedule: Schedule, prices: Sequence[PricePoint], battery: Battery, *,
              interval: timedelta = INTERVAL) -> Bid:
    """The bid for the schedule's first interval (see the module docstring for the rule).

    ``prices``, ``battery`` and ``interval`` (the market's, 5 minutes unless given: the ``h`` of the
    extra blocks) are the ones the schedule was planned with.
    Raises ``ValueError`` when the schedule has no intervals (not solved).
    """
    if not schedule.intervals or schedule.final_energy_wh is None:
        raise ValueError(f"cannot bid from a schedule with status {schedule.status!r} and no intervals")
    if len(prices) != len(schedule.intervals) or prices[0].interval_start != schedule.intervals[0].interval_start:
        raise ValueError("prices do not match the schedule: pass the prices the schedule was planned with")

    first = schedule.intervals[0]
    price = [p.price_usd_per_mwh for p in prices]
    p_0, future = price[0], price[1:]
    eta, deg = battery.efficiency, battery.degradation_usd_per_mwh
    root = math.sqrt(eta)
    interval_h = interval / timedelta(hours=1)
    later_energy_wh = [i.energy_wh for i in schedule.intervals[1:]] + [schedule.final_energy_wh]

    sells: list[BidPair] = []
    buys: list[BidPair] = []
    if first.discharge_w > 0:
        floor = min(p_0, deg + min(future) / eta) if future else min(p_0, deg)
        sells.append(BidPair(floor, first.discharge_w))
    if first.charge_w > 0:
        cap = max(p_0, eta * (max(future) - deg)) if future else p_0
        buys.append(BidPair(cap, -first.charge_w))

    if first.charge_w == 0:
        keep_wh = battery.reserve_pct / 100.0 * battery.capacity_wh
        if battery.final_soc_pct is not None:
            keep_wh = max(keep_wh, battery.final_soc_pct / 100.0 * battery.capacity_wh)
        spare_wh = min(later_energy_wh) - keep_wh
        extra_w = min(battery.max_discharge_w - first.discharge_w, root * spare_wh / interval_h)
        scarcity = max(max(price), deg)
        if extra_w >= _MIN_BLOCK_W:
            sells.append(BidPair(scarcity, extra_w))
    if first.discharge_w == 0:
        room_wh = battery.capacity_wh - max(later_energy_wh)
        extra_w = min(battery.max_charge_w - first.charge_w, room_wh / (root * interval_h))
        bargain = min(0.0, min(price))
        if extra_w >= _MIN_BLOCK_W:
            buys.append(BidPair(bargain, -extra_w))

    # Both sides can only be present for an idle plan, and then both are
    # extras: if they would cross (every forecast 0 and no degradation cost),
    # keep the purchase, which is paid at a price of 0 or less.
    if sells and buys and max(b.price_usd_per_mwh for b in buys) >= min(s.price_usd_per_mwh for s in sells):
        sells = []
    return Bid(first.interval_start, _merge(buys + sells))
