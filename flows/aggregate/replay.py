"""`vpp replay aggregate` (and the second half of `vpp replay pipeline`): the aggregation flow over dumps, no services.

``aggregate``: DUMP holds ``telemetry.canonical`` records as ``vpp dump
telemetry.canonical`` writes them (kcat ``-J`` lines, payload = the record's
JSON form, ts epoch ms). Each payload is Avro-encoded on the way in, so the
flow decodes exactly what it decodes from the broker. The dump's
``partition`` field is the source partition of the watermark: the runner
lists the partitions first, and the watermark waits for each of them, so a
dump written partition after partition (as ``vpp dump`` does) is not read
as "everything in partition 1 is late". Output ``DIR/fleet.aggregates.jsonl``
(and ``DIR/telemetry.dlq.jsonl``); the final windows are flushed at the end
of the dump. Deterministic: records are sorted by (window_start, depth,
node_path), and the content does not depend on the number of workers or
processes (``run_aggregate_replay(..., processes=P, workers=W)``).

``pipeline`` (``cli.replay``) runs the canonicalize replay, then this one over its output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
import orjson

from sinks.ports import RecordDumpPorts

__all__ = ["dump_partitions", "run_aggregate_replay", "run_replay", "sort_aggregates", "AGGREGATES_FILE"]

AGGREGATES_FILE = "fleet.aggregates.jsonl"


def dump_partitions(dump: Path, topic: str = "telemetry.canonical") -> frozenset[int]:
    """The partitions holding ``topic`` records in a dump."""
    from sinks.dumps import base_topic, read_dump

    return frozenset(r.partition for r in read_dump(dump) if base_topic(r.topic) == topic)


def _sort_key(line: bytes) -> tuple:
    v = orjson.loads(line)["value"]
    return v["window_start"], v["depth"], v["node_path"]


def sort_aggregates(path: Path) -> int:
    """Sort a ``fleet.aggregates.jsonl`` by (window_start, depth, node_path); returns the record count."""
    with open(path, "rb") as fh:
        lines = [line for line in fh if line.strip()]
    lines.sort(key=_sort_key)
    with open(path, "wb") as fh:
        fh.writelines(lines)
    return len(lines)


def _build(settings, dump: Path, assets_csv: Path, out: Path, partitions: frozenset[int]):
    from flows.aggregate.flow import OUTPUT_TOPICS, build_flow
    from flows._common.registries import static_assets

    ports = RecordDumpPorts(dump, out, OUTPUT_TOPICS)
    return build_flow(settings, ports=ports, assets=static_assets(assets_csv), source_partitions=partitions,
                      idle_advance=False)


def run_aggregate_replay(settings, dump: Path, assets_csv: Path, out: Path, *, processes: int = 1,
                         workers: int = 1) -> None:
    """The aggregate flow over ``dump`` into ``out``; several local processes on loopback if asked."""
    partitions = dump_partitions(dump)
    if processes == 1:
        from bytewax.testing import cluster_main, run_main

        flow = _build(settings, dump, assets_csv, out, partitions)
        if workers == 1:
            run_main(flow)
        else:
            cluster_main(flow, [], 0, worker_count_per_proc=workers)
    else:
        _run_processes(settings, dump, assets_csv, out, processes, workers)
    sort_aggregates(out / AGGREGATES_FILE)


def _run_processes(settings, dump: Path, assets_csv: Path, out: Path, processes: int, workers: int) -> None:
    from vpp.net import free_ports

    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(processes))
    with tempfile.TemporaryDirectory(prefix="vpp-aggregate-") as tmp:
        config = Path(tmp) / "settings.toml"
        config.write_text(f"window_s = {settings.window_s}\nlateness_s = {settings.lateness_s}\n"
                          f"staleness_s = {settings.staleness_s}\n")
        outs = [Path(tmp) / f"proc-{i}" for i in range(processes)]
        procs = [subprocess.Popen([sys.executable, "-m", "flows.aggregate.replay", "--dump", str(dump),
                                   "--assets", str(assets_csv), "--out", str(outs[i]), "--config", str(config),
                                   "--workers", str(workers), "--process-id", str(i), "--addresses", addresses],
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
                 for i in range(processes)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"aggregate replay processes exited with {codes}")
        out.mkdir(parents=True, exist_ok=True)
        for name in ("fleet.aggregates.jsonl", "telemetry.dlq.jsonl"):
            with open(out / name, "wb") as target:
                for d in outs:
                    if (d / name).exists():
                        target.write((d / name).read_bytes())


def run_replay(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    """``vpp replay aggregate``: one worker, one process."""
    run_aggregate_replay(settings, dump, assets_csv, out)


def main(argv: list[str] | None = None) -> int:
    """One process of a multi-process replay (started by ``run_aggregate_replay``)."""
    from bytewax.testing import cluster_main

    from vpp.config import Settings

    p = argparse.ArgumentParser(prog="python -m flows.aggregate.replay")
    p.add_argument("--dump", required=True)
    p.add_argument("--assets", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--process-id", type=int, required=True)
    p.add_argument("--addresses", required=True)
    args = p.parse_args(argv)
    settings = Settings.load(config_file=args.config, environ={})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flow = _build(settings, Path(args.dump), Path(args.assets), out, dump_partitions(Path(args.dump)))
    cluster_main(flow, args.addresses.split(";"), args.process_id, worker_count_per_proc=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
