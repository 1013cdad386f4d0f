"""Helpers the flow tests share for reading the real services back (imported from the tests' own folder)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Callable, Iterator


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def export_series(timeseries_url: str, metric: str, start_ms: int, end_ms: int) -> Iterator[tuple[dict, list, list]]:
    """(labels, timestamps ms, values) of every series of ``metric`` in the time range (VictoriaMetrics export API)."""
    query = urllib.parse.urlencode({"match[]": f'{{__name__="{metric}"}}', "start": start_ms // 1000 - 1,
                                    "end": end_ms // 1000 + 1})
    with urllib.request.urlopen(f"{timeseries_url}/api/v1/export?{query}", timeout=30) as resp:
        for line in resp:
            series = json.loads(line)
            yield series["metric"], series["timestamps"], series["values"]
