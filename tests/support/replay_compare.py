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
      after its last window that reports late. "Differs" includes "exists in one run only": a leaf
      whose only readings one run dropped as late is absent from that run (and so are the nodes above
      it that had no other device in the window), and a leaf that holds nothing but late readings
      (``devices_known`` 0, ``late`` > 0) exists in one run only. A node's window is compared exactly
      (present in both, equal) unless one of those device windows lies under it.
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


def _in_span(replay: dict, live: dict) -> dict:
    """The replay's windows within the live span (rule 1): the ones compared."""
    first, frontier = live_span(live)
    return {k: r for k, r in replay.items() if first <= r["window_start"] and r["window_end"] <= frontier}


def _leaf_device(key: tuple, device_paths: dict[str, str]) -> str | None:
    """The device whose leaf ``key`` (node_path, window_start) is, or None for an inner node."""
    node = key[0]
    device = node.rsplit("/", 1)[-1]
    return device if device in device_paths and node == f"{device_paths[device]}/{device}" else None


def _late_counts(runs: Iterable[dict], device_paths: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    """(late readings by device over the runs together, the last window that reported some) of rule 2."""
    late: dict[str, int] = defaultdict(int)
    last_late: dict[str, int] = {}
    for run in runs:
        for k, r in run.items():
            device = _leaf_device(k, device_paths)
            if device is not None and r["late"]:
                late[device] += r["late"]
                last_late[device] = max(last_late.get(device, k[1]), k[1])
    return late, last_late


def _tainted_windows(live: dict, compared: dict, one_sided: set, device_paths: dict[str, str]) -> dict[str, set[int]]:
    """Device -> the windows in which its leaf differs between the runs or exists in one of them only."""
    tainted: dict[str, set[int]] = defaultdict(set)
    for k in one_sided | {k for k in set(compared) & set(live) if _without_late(live[k]) != _without_late(compared[k])}:
        device = _leaf_device(k, device_paths)
        if device is not None:
            tainted[device].add(k[1])
    return tainted


def _under_tainted(key: tuple, tainted: dict[str, set[int]], device_paths: dict[str, str]) -> bool:
    node, ws = key
    return any(ws in windows and _covers(node, f"{device_paths[d]}/{d}") for d, windows in tainted.items())


def missing_live(live: dict, replay: dict, device_paths: dict[str, str]) -> list:
    """Replay windows within the live span that live has not written (yet), leaving out what rule 2 lets
    live lack: the leaf of a device whose late readings the runs counted, and the nodes above such leaves."""
    compared = _in_span(replay, live)
    missing = set(compared) - set(live)
    late, _ = _late_counts((live, compared), device_paths)
    excused = {k for k in missing if late.get(_leaf_device(k, device_paths) or "", 0)}
    tainted = _tainted_windows(live, compared, excused, device_paths)
    return sorted(k for k in missing - excused if not _under_tainted(k, tainted, device_paths))


def compare_aggregates(live: dict, replay: dict, device_paths: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """(problems, counts) of live vs replay ``fleet.aggregates`` keyed by (node_path, window_start).

    ``device_paths``: device id -> its leaf's node_path prefix (the site path): which nodes a device is under.
    """
    compared = _in_span(replay, live)
    replay_last = max((r["window_start"] for r in replay.values()), default=0)
    after_input = {k for k in set(live) - set(replay) if k[1] > replay_last}
    replay_only = set(compared) - set(live)
    late_only = {k for k in set(live) - set(replay) - after_input if _late_only(live[k])}
    live_only = set(live) - set(replay) - after_input - late_only
    late, last_late = _late_counts((live, replay), device_paths)
    tainted = _tainted_windows(live, compared, replay_only | live_only, device_paths)

    problems = []
    for device, windows in tainted.items():
        if len(windows) > 2 * late[device] or max(windows) > last_late.get(device, -1):
            problems.append(f"aggregate: device {device} differs in windows {sorted(windows)} (or is in one run only) "
                            f"but the runs counted {late[device]} late readings of it (last reported in window "
                            f"{last_late.get(device)})")
    problems += [f"aggregate: window {k} closed in replay, missing live: {compared[k]}"
                 for k in sorted(replay_only) if not _under_tainted(k, tainted, device_paths)][:10]
    problems += [f"aggregate: window {k} live only: {live[k]}"
                 for k in sorted(live_only) if not _under_tainted(k, tainted, device_paths)][:10]
    excluded = 0
    for k in sorted(set(compared) & set(live)):
        if _under_tainted(k, tainted, device_paths):
            excluded += 1
        elif _without_late(live[k]) != _without_late(compared[k]):
            problems.append(f"aggregate: window {k} differs:\n  live   {live[k]}\n  replay {compared[k]}")
    counts = {"replay_windows": len(replay), "compared": len(set(compared) & set(live)) - excluded, "excluded_late": excluded,
              "replay_only_late": sum(1 for k in replay_only if _under_tainted(k, tainted, device_paths)),
              "live_only_late": sum(1 for k in live_only if _under_tainted(k, tainted, device_paths)),
              "outside_live_span": len(replay) - len(compared), "live_after_input": len(after_input),
              "live_late_only": len(late_only), "late_devices": len(late), "late_readings": sum(late.values())}
    return problems[:20], counts


def merge_by_timestamp(dumps, out):
    """One dump of several topics in Kafka-timestamp order (stable: each topic keeps its own order within a ms)."""
    records = sorted((r for d in dumps for r in read_dump(d)), key=lambda r: r.ts or 0)
    with open(out, "wb") as fh:
        for r in records:
            fh.write(dump_line(r.topic, r.partition, r.offset, r.ts, r.key, r.value))
    return out
