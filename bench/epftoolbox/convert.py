"""Convert an epftoolbox dataset CSV (Lago et al. 2021) to our prices format.

    python bench/epftoolbox/convert.py DE.csv prices_de.csv [--utc-offset +01:00]

epftoolbox files have the header ``date,Price,<regressor 1>,<regressor 2>``
with naive local timestamps, 24 hours on every day (the source removed the
daylight-saving hours), so a fixed UTC offset (the market's standard time,
CET ``+01:00`` for the EPEX markets) gives consecutive hourly intervals. The
price column keeps its currency (EUR/MWh for EPEX) under our header name
``price_usd_per_mwh``; regressor names become snake case. The datasets are not
committed: epftoolbox downloads them from Zenodo, or take the copy in a public
mirror (see bench/README.md, "Day-ahead forecast on epftoolbox DE").
"""

from __future__ import annotations

import argparse
import csv
import re
import sys


def snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def convert(source, target, utc_offset: str) -> int:
    reader = csv.reader(source)
    header = next(reader)
    if [h.strip().lower() for h in header[:2]] != ["date", "price"]:
        raise SystemExit(f"not an epftoolbox dataset: header {header!r}")
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(["interval_start", "price_usd_per_mwh", *(snake(h) for h in header[2:])])
    rows = 0
    for row in reader:
        if row:
            writer.writerow([row[0].strip().replace(" ", "T") + utc_offset, *row[1:]])
            rows += 1
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--utc-offset", default="+01:00", help="the market's standard time (default +01:00, CET)")
    args = parser.parse_args(argv)
    with open(args.source, newline="") as source, open(args.target, "w", newline="") as target:
        rows = convert(source, target, args.utc_offset)
    print(f"{rows} rows written to {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
