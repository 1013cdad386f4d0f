"""Live against replay, record by record: the rules of what may legitimately depend on wall time.

Shared by ``test_replay_equals_live`` and ``test_chaos``. Every function takes the records as
``vpp dump`` / ``vpp replay`` give them (dicts of the Avro JSON form) and returns what differs, so a
test asserts on an empty result and a failure names the records.

Rules (stated once, here):

- canonicalize has no wall time in it (reading times are judged against the Kafka timestamp, the
  platform's receive time): live and replay give the same canonical records, keyed by
  (device_id, ts), and the same dead letters, keyed by source (partition, offset); equal field by
  field (the dead letter's ``source_topic`` is compared without the test's topic prefix).
- aggregate: live closes windows when the watermark passes them, and the watermark moves with the
  wall clock when every input partition is idle; replay closes by event time only and flushes the
  last windows at end of input. So:
  (1) a replay window that ends after the last window live closed is not compared (live closes it
      only when the wall clock gets there: the last windows, and those of a clock running ahead), nor
      one that starts before the first window live closed (live, readings older than the flow's first
      watermark are late; replay reads the dump partition by partition and the watermark waits for
      every partition, so they are not); and a live window after the replay's last one is not compared
      either (once the input ends, the wall clock goes on closing windows live: devices carried, then
      stale);
  (2) a reading that reached the flow after its window had closed is dropped from that window and
      counted in ``late`` of the device's next closing window; which readings that is depends on
      arrival times (batches, stalls of the flow upstream), not only on the data. So ``late`` is never
      compared, and a device leaf (device, window) may differ only if one of the runs counted late
      readings of that device: a reading one run dropped changes its own window and the next (a
      reading's value holds until the device's next reading: the means are time-weighted), so a device
      differs in at most twice as many windows as it had late readings in the two runs together, none
      after its last window that reports late; a device leaf that holds nothing but late readings
      (``devices_known`` 0, ``late`` > 0) may exist in one run only. A node's window is compared
      exactly unless one of those device windows lies under it.
  Everything else (every field but ``late``, of every other node window) must be equal.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable

import orjson

from sinks.dumps import base_topic, dump_line, read_dump

AGG_KEY = ("node_path", "window_start")


def read_jsonl(path) -> list[dict]:
    """The values of a ``vpp replay --out`` file."""
    with open(path, "rb") as fh:
        return [orjson.loads(line)["value"] for line in fh if line.strip()]


def dump_values(path) -> list[dict]:
    """The values of a ``vpp dump`` file (tombstones left out)."""
    return [orjson.loads(r.payload) for r in read_dump(path) if r.payload is not None]


def replay_canonicalize(procs, raw_dump: Path, assets_csv: Path, out: Path) -> tuple[list[dict], list[dict]]:
    """``vpp replay canonicalize`` of a dump of telemetry.raw: its canonical records and its dead letters."""
    procs.run("replay", "canonicalize", "--input", str(raw_dump), "--assets", str(assets_csv), "--out", str(out))
    return read_jsonl(out / "telemetry.canonical.jsonl"), read_jsonl(out / "telemetry.dlq.jsonl")


def keyed(records: Iterable[dict], key) -> dict:
    """Records by key; a key seen twice must carry identical records (a re-produced copy)."""
    out: dict = {}
    for r in records:
        k = key(r)
        if k in out and out[k] != r:
            raise AssertionError(f"two different records for {k}: {out[k]} != {r}")
        out[k] = r
    return out


def canonical_key(r: dict) -> tuple:
    return r["device_id"], r["ts"]


def dlq_key(r: dict) -> tuple:
    return r["source_partition"], r["source_offset"]


def unprefixed(r: dict) -> dict:
    return {**r, "source_topic": base_topic(r["source_topic"])} if r.get("source_topic") else r


def diff_keyed(live: dict, replay: dict, what: str) -> list[str]:
    problems = [f"{what}: {k} only live: {live[k]}" for k in sorted(set(live) - set(replay), key=repr)[:5]]
    problems += [f"{what}: {k} only in replay: {replay[k]}" for k in sorted(set(replay) - set(live), key=repr)[:5]]
    problems += [f"{what}: {k} differs:\n  live   {live[k]}\n  replay {replay[k]}"
                 for k in sorted(set(live) & set(replay), key=repr) if live[k] != replay[k]][:5]
    return problems


def _without_late(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "late"}


def _late_only(r: dict) -> bool:
    """The record of a device that reported nothing but late readings in the window (or a node of only those)."""
    return r["late"] > 0 and r["devices_known"] == 0


def _covers(node: str, path: str) -> bool:
    return path == node or path.startswith(node + "/")


def live_span(live: dict) -> tuple[int, int]:
    """(start of the first, end of the last) window live closed: of the root's records (depth 1), which a
    window's other records follow."""
    roots = [r for r in live.values() if r["depth"] == 1]
    return min((r["window_start"] for r in roots), default=0), max((r["window_end"] for r in roots), default=0)


def missing_live(live: dict, replay: dict) -> list:
    """Replay windows within the live span that live has not written (yet)."""
    first, frontier = live_span(live)
    return [k for k, r in replay.items() if first <= r["window_start"] and r["window_end"] <= frontier and k not in live]


def compare_aggregates(live: dict, replay: dict, device_paths: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """(problems, counts) of live vs replay ``fleet.aggregates`` keyed by (node_path, window_start).

    ``device_paths``: device id -> its leaf's node_path prefix (the site path): which nodes a device is under.
    """
    first, frontier = live_span(live)
    compared = {k: r for k, r in replay.items() if first <= r["window_start"] and r["window_end"] <= frontier}
    problems = [f"aggregate: window {k} closed in replay, missing live: {compared[k]}"
                for k in sorted(set(compared) - set(live))[:10]]
    replay_last = max((r["window_start"] for r in replay.values()), default=0)
    after_input = {k for k in set(live) - set(replay) if k[1] > replay_last}
    problems += [f"aggregate: window {k} live only: {live[k]}" for k in sorted(set(live) - set(replay) - after_input)
                 if not _late_only(live[k])][:10]

    late: dict[str, int] = defaultdict(int)
    last_late: dict[str, int] = {}
    leaves = {}
    for run in (live, replay):
        for (node, ws), r in run.items():
            device = node.rsplit("/", 1)[-1]
            if device in device_paths and node == f"{device_paths[device]}/{device}":
                leaves[(node, ws)] = device
                if r["late"]:
                    late[device] += r["late"]
                    last_late[device] = max(last_late.get(device, ws), ws)
    # device windows that differ (both sides present; a missing one is reported above)
    tainted: dict[str, set[int]] = defaultdict(set)
    for k, device in leaves.items():
        if k in compared and k in live and _without_late(live[k]) != _without_late(compared[k]):
            tainted[device].add(k[1])
    for device, windows in tainted.items():
        if len(windows) > 2 * late[device] or max(windows) > last_late.get(device, -1):
            problems.append(f"aggregate: device {device} differs in windows {sorted(windows)} but the runs counted "
                            f"{late[device]} late readings of it (last reported in window {last_late.get(device)})")
    excluded = 0
    for k in sorted(set(compared) & set(live)):
        node, ws = k
        if any(ws in windows and _covers(node, f"{device_paths[d]}/{d}") for d, windows in tainted.items()):
            excluded += 1
            continue
        if _without_late(live[k]) != _without_late(compared[k]):
            problems.append(f"aggregate: window {k} differs:\n  live   {live[k]}\n  replay {compared[k]}")
    counts = {"replay_windows": len(replay), "compared": len(compared) - excluded, "excluded_late": excluded,
              "outside_live_span": len(replay) - len(compared), "live_after_input": len(after_input),
              "live_late_only": sum(1 for k in set(live) - set(replay) if _late_only(live[k])), "late_devices": len(late),
              "late_readings": sum(late.values())}
    return problems[:20], counts


def merge_by_timestamp(dumps, out):
    """One dump of several topics in Kafka-timestamp order (stable: each topic keeps its own order within a ms)."""
    records = sorted((r for d in dumps for r in read_dump(d)), key=lambda r: r.ts or 0)
    with open(out, "wb") as fh:
        for r in records:
            fh.write(dump_line(r.topic, r.partition, r.offset, r.ts, r.key, r.value))
    return out
