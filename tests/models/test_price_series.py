"""Prices files at any fixed interval: the interval inferred from the file, every bad line named (a table)."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest

from models.price_series import PricesFileError, describe_interval, parse_prices

HEAD = "interval_start,price_usd_per_mwh\n"


def rows(*stamps: str, price: str = "10") -> str:
    return "".join(f"{s},{price}\n" for s in stamps)


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        (HEAD + rows("2024-06-01T00:00:00Z", "2024-06-01T00:05:00Z", "2024-06-01T00:10:00Z"), timedelta(minutes=5)),
        (HEAD + rows("2024-06-01T00:00:00Z", "2024-06-01T00:15:00Z"), timedelta(minutes=15)),
        (HEAD + rows("2024-06-01T00:00:00+10:00", "2024-06-01T00:30:00+10:00"), timedelta(minutes=30)),
        (HEAD + rows("2016-01-04T00:00:00+01:00", "2016-01-04T01:00:00+01:00", "2016-01-04T02:00:00+01:00"),
         timedelta(hours=1)),
        # the same instants written in two offsets (a daylight-saving change with offsets) are consecutive
        (HEAD + rows("2016-10-30T02:00:00+02:00", "2016-10-30T02:00:00+01:00"), timedelta(hours=1)),
        (HEAD + rows("2024-06-01T00:00:00Z"), timedelta(minutes=5)),  # one interval: the platform's 5 minutes
    ],
    ids=["5min", "15min", "30min", "hourly", "dst-with-offsets", "single"],
)
def test_the_interval_is_inferred_from_the_file(text, interval):
    series = parse_prices(text, "p.csv")
    assert series.interval == interval
    assert series.intervals_per_day == timedelta(days=1) // interval


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + rows("2024-06-01T00:00:00Z", "2024-06-01T01:00:00Z", "2024-06-01T03:00:00Z"),
         r"p.csv:4: interval_start 2024-06-01T03:00:00\+00:00 is not 1 hour after .* \(line 3\): a gap of 1 missing interval;"),
        (HEAD + rows("2024-06-01T00:00:00Z", "2024-06-01T00:15:00Z", "2024-06-01T01:15:00Z"),
         "p.csv:4: .* a gap of 3 missing intervals"),
        (HEAD + rows("2016-10-30T01:00:00", "2016-10-30T02:00:00", "2016-10-30T02:00:00", "2016-10-30T03:00:00"),
         r"p.csv:4: interval_start 2016-10-30T02:00:00 repeats .* \(line 3\) \(a daylight-saving change\?"),
        (HEAD + rows("2016-03-27T01:00:00", "2016-03-27T03:00:00", "2016-03-27T04:00:00"),
         r"p.csv:3: .* a gap of 1 missing interval \(a daylight-saving change\?"),
        (HEAD + rows("2024-06-01T01:00:00Z", "2024-06-01T00:00:00Z", "2024-06-01T02:00:00Z"),
         r"p.csv:3: interval_start 2024-06-01T00:00:00\+00:00 is before"),
        (HEAD + rows("2024-06-01T00:00:00Z", "2024-06-01T00:10:00Z", "2024-06-01T00:25:00Z"),
         "p.csv:4: .* not on its 10 minutes grid"),
        (HEAD + rows("2024-06-01T00:00:00Z", "2024-06-01T00:07:00Z"), "p.csv:3: the interval 0:07:00 .* divides a day"),
        (HEAD + "2024-06-01T00:00:00Z,10\n2024-06-01T00:05:00,10\n", "p.csv:3: mixes timestamps"),
        (HEAD + rows("2024-06-01T00:00:00Z", price="inf"), r"p.csv:2: price_usd_per_mwh 'inf' is not a finite number"),
        (HEAD + rows("2024-06-01T00:00:00Z", price="2e6"), "p.csv:2: .* beyond"),
        (HEAD + rows("2024-06-01T00:00:00Z", price=""), "p.csv:2: price_usd_per_mwh '' is not a finite number"),
        ("interval_start,price_usd_per_mwh,load\n2024-06-01T00:00:00Z,1,x\n", "p.csv:2: regressor load 'x'"),
        ("interval_start,price_usd_per_mwh,load,load\n2024-06-01T00:00:00Z,1,2,3\n", "p.csv:1: regressor columns need"),
        ("interval_start,price_usd_per_mwh,load\n2024-06-01T00:00:00Z,1\n", "p.csv:2: expected 3 fields"),
        ("interval_start,price_usd_per_mwh,load\n2024-06-01T00:00:00Z,,5\n2024-06-01T00:05:00Z,1,5\n",
         "p.csv:3: a price after rows without one"),
        ("price,interval_start\n", "p.csv:1: expected the header"),
        (HEAD, "p.csv: no prices after the header"),
    ],
    ids=["hourly-gap", "15min-gap", "dst-repeat", "dst-spring-gap", "backwards", "off-grid", "odd-interval",
         "mixed-offsets", "inf", "beyond-cap", "empty-price", "bad-regressor", "duplicate-names", "short-row",
         "price-after-future", "header", "empty"],
)
def test_bad_files_are_one_error_naming_the_line(text, message):
    with pytest.raises(PricesFileError) as caught:
        parse_prices(text, "p.csv")
    assert re.search(message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_regressors_come_with_every_row_and_trailing_rows_carry_the_day_to_forecast():
    text = ("interval_start,price_usd_per_mwh,load_mw,wind_mw\n"
            "2024-06-01T00:00:00Z,10,100,5\n2024-06-01T01:00:00Z,11,110,6\n"
            "2024-06-01T02:00:00Z,,120,7\n2024-06-01T03:00:00Z,,130,8\n")
    series = parse_prices(text, "p.csv")
    assert series.regressor_names == ("load_mw", "wind_mw")
    assert [p.price_usd_per_mwh for p in series.points] == [10.0, 11.0]
    assert len(series.starts) == 4
    np.testing.assert_array_equal(series.regressors[:, 0], [100, 110, 120, 130])


@pytest.mark.parametrize(("minutes", "words"), [(5, "5 minutes"), (15, "15 minutes"), (60, "1 hour"), (120, "2 hours")])
def test_intervals_are_described_as_people_say_them(minutes, words):
    assert describe_interval(timedelta(minutes=minutes)) == words
