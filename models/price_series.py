"""A prices file: ``interval_start,price_usd_per_mwh[,regressor...]`` at one fixed interval, checked line by line.

The interval is inferred from the file: the shortest step between two
consecutive rows (5 min, 15 min, 30 min, 1 h, ... any whole number of
minutes that divides a day). Every other step must be exactly that long, so
a gap (missing intervals), a repeated or backwards timestamp (the repeated
hour of a daylight-saving change, when timestamps carry no UTC offset) or a
step off the grid is an error naming its line. Columns after
``price_usd_per_mwh`` are numeric regressors known ahead (load and wind
forecasts, ...). Rows at the end may leave the price empty: they carry the
regressors of the intervals to forecast.

Pure: ``parse_prices(text, source)`` reads text and raises ``PricesFileError``
(a ``ValueError``) with ``source:line:`` first; the CLI reads the file.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from models.battery import PricePoint

__all__ = ["HEADER", "MAX_ABS_PRICE_USD_PER_MWH", "PriceSeries", "PricesFileError", "describe_interval", "parse_prices"]

HEADER = ("interval_start", "price_usd_per_mwh")
#: Largest price magnitude accepted, $/MWh. Real caps are in the thousands (ERCOT 5,000, NEM ~18,000):
#: anything beyond a million is a unit or data error, and 1e308 overflows revenue to infinity.
MAX_ABS_PRICE_USD_PER_MWH = 1e6
_DAY = timedelta(days=1)


class PricesFileError(ValueError):
    """A prices file that cannot be used; the message starts with ``source:line:``."""


def describe_interval(interval: timedelta) -> str:
    """``"5 minutes"``, ``"1 hour"``, ``"90 minutes"``: an interval as people say it."""
    minutes = interval.total_seconds() / 60
    if minutes % 60 == 0:
        hours = int(minutes // 60)
        return "1 hour" if hours == 1 else f"{hours} hours"
    return f"{minutes:g} minutes"


@dataclass(frozen=True)
class PriceSeries:
    """What a prices file holds: the priced intervals, the interval, and regressors for every row.

    ``regressors`` has one row per interval of ``starts`` (priced rows first,
    then the trailing rows without a price) and one column per name.
    """

    points: tuple[PricePoint, ...]
    interval: timedelta
    regressor_names: tuple[str, ...] = ()
    starts: tuple[datetime, ...] = ()
    regressors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def intervals_per_day(self) -> int:
        return int(_DAY / self.interval)


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _check_step(source: str, line: int, start: datetime, previous: datetime, prev_line: int,
                interval: timedelta) -> None:
    step = start - previous
    if step == interval:
        return
    naive = start.tzinfo is None
    dst = (" (a daylight-saving change? give timestamps with their UTC offset, e.g. 2016-10-30T02:00:00+01:00)"
           if naive and abs(step) <= timedelta(hours=1) + interval else "")
    where = f"{source}:{line}: interval_start {start.isoformat()}"
    if step <= timedelta(0):
        what = "repeats" if step == timedelta(0) else "is before"
        raise PricesFileError(f"{where} {what} {previous.isoformat()} (line {prev_line}){dst}: "
                              "give each interval once, in order")
    if step % interval:
        raise PricesFileError(f"{where} is not {describe_interval(interval)} after {previous.isoformat()} "
                              f"(line {prev_line}) and not on its {describe_interval(interval)} grid: "
                              "give intervals of one fixed length")
    missing = step // interval - 1
    raise PricesFileError(f"{where} is not {describe_interval(interval)} after {previous.isoformat()} "
                          f"(line {prev_line}): a gap of {missing} missing interval{'s' * (missing != 1)}{dst}; "
                          "fill it or give the file without gaps")


def _infer_interval(source: str, rows: list[tuple[int, datetime]]) -> timedelta:
    steps = [b - a for (_, a), (_, b) in zip(rows, rows[1:]) if b > a]
    if not steps:
        if len(rows) > 1:
            _check_step(source, rows[1][0], rows[1][1], rows[0][1], rows[0][0], timedelta(minutes=5))
        return timedelta(minutes=5)  # a single interval: the platform's market interval
    interval = min(steps)
    if interval < timedelta(minutes=1) or interval % timedelta(minutes=1) or _DAY % interval:
        line = next(b_line for (_, a), (b_line, b) in zip(rows, rows[1:]) if b - a == interval)
        raise PricesFileError(f"{source}:{line}: the interval {interval} (the shortest step in the file) is not a whole "
                              "number of minutes that divides a day: give 5-, 15-, 30- or 60-minute intervals")
    return interval


def parse_prices(text: str, source: str = "prices") -> PriceSeries:
    """The ``PriceSeries`` of a prices CSV's text; ``PricesFileError`` naming the line of any problem."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, datetime]] = []
    prices: list[float] = []
    extra: list[list[float]] = []
    try:
        header = next(reader, None)
        names = [h.strip() for h in header or []]
        if tuple(names[:2]) != HEADER:
            raise PricesFileError(f"{source}:1: expected the header '{','.join(HEADER)}' (then optional regressor "
                                  f"columns), got {','.join(header or [])!r}")
        regressor_names = tuple(names[2:])
        if any(not n for n in regressor_names) or len(set(regressor_names)) != len(regressor_names):
            raise PricesFileError(f"{source}:1: regressor columns need distinct, non-empty names, got {regressor_names}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise PricesFileError(f"{source}:{line}: expected {len(names)} fields ({','.join(names)}), got {len(row)}")
            try:
                start = datetime.fromisoformat(row[0].strip())
            except ValueError:
                raise PricesFileError(f"{source}:{line}: interval_start {row[0]!r} is not an ISO 8601 timestamp") from None
            if rows and (start.tzinfo is None) != (rows[-1][1].tzinfo is None):
                raise PricesFileError(f"{source}:{line}: mixes timestamps with and without a UTC offset")
            cell = row[1].strip()
            if not cell and regressor_names:
                price = math.nan  # a row of the intervals to forecast: regressors only
            else:
                price = _number(cell)
                if not math.isfinite(price):
                    raise PricesFileError(f"{source}:{line}: price_usd_per_mwh {row[1]!r} is not a finite number")
                if prices and math.isnan(prices[-1]):
                    raise PricesFileError(f"{source}:{line}: a price after rows without one: only the last rows "
                                          "(the intervals to forecast) may leave the price empty")
            if abs(price) > MAX_ABS_PRICE_USD_PER_MWH:
                raise PricesFileError(f"{source}:{line}: price_usd_per_mwh {row[1]!r} is beyond "
                                      f"+-{MAX_ABS_PRICE_USD_PER_MWH:,.0f} $/MWh, the most this accepts: "
                                      "check the unit ($/MWh) and the data")
            values = [_number(cell) for cell in row[2:]]
            for name, cell, value in zip(regressor_names, row[2:], values):
                if not math.isfinite(value):
                    raise PricesFileError(f"{source}:{line}: regressor {name} {cell!r} is not a finite number")
            rows.append((line, start))
            prices.append(price)
            extra.append(values)
    except csv.Error as exc:
        raise PricesFileError(f"{source}:{reader.line_num}: not a readable CSV line ({exc})") from None
    priced = sum(1 for p in prices if not math.isnan(p))
    if not priced:
        raise PricesFileError(f"{source}: no prices after the header")
    interval = _infer_interval(source, rows)
    for (prev_line, previous), (line, start) in zip(rows, rows[1:]):
        _check_step(source, line, start, previous, prev_line, interval)
    starts = tuple(start for _, start in rows)
    points = tuple(PricePoint(s, p) for s, p in zip(starts[:priced], prices[:priced]))
    matrix = np.array(extra, dtype=float).reshape(len(rows), len(regressor_names))
    return PriceSeries(points, interval, regressor_names, starts, matrix)
