"""`vpp replay FLOW` and `vpp dump TOPIC`: the same dataflows over dump files, and dumps from the broker.

``vpp replay FLOW --input DUMP --assets ASSETS.csv --out DIR`` runs the flow's
own ``build_flow`` with file ports (no broker, no database) on one worker,
writing ``DIR/<topic>.jsonl`` (spec telemetry.md section 6). Deterministic:
the same dump gives byte-identical output.

``vpp replay FLOW --input DUMP --to-broker`` instead republishes the dump into
the running broker, keeping keys, timestamps and (where the topic has them)
partitions, so a running flow consumes it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, Callable

from cli.common import command, load_settings
from vpp.errors import UserError
from vpp.kafka_security import client_config

__all__ = ["add_commands", "REPLAYS", "replay", "run_pipeline_replay", "publish_dump", "dump_topic", "replay_schema_id"]


def _canonicalize(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from flows.canonicalize.replay import run_replay

    run_replay(settings, dump, assets_csv, out)


def _aggregate(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from flows.aggregate.replay import run_replay

    run_replay(settings, dump, assets_csv, out)


def _dispatch(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from flows.dispatch.replay import run_replay

    run_replay(settings, dump, assets_csv, out)


def _alerts(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from flows.alerts.replay import run_replay

    run_replay(settings, dump, assets_csv, out)


def run_pipeline_replay(settings, raw_dump: Path, assets_csv: Path, out: Path) -> None:
    """canonicalize -> aggregate over a raw dump, as two flows in sequence through an intermediate dump in ``out``.

    Two runs rather than one Dataflow: each flow stays exactly the flow that runs in production, and the
    intermediate file (the canonical records in the order canonicalize produced them) is there to inspect.
    """
    import tempfile

    from flows.aggregate.replay import AGGREGATES_FILE, run_aggregate_replay
    from sinks.dumps import canonical_jsonl_to_dump

    _canonicalize(settings, raw_dump, assets_csv, out)
    intermediate = out / "telemetry.canonical.dump.jsonl"
    canonical_jsonl_to_dump(out / "telemetry.canonical.jsonl", intermediate)
    with tempfile.TemporaryDirectory(prefix="vpp-aggregate-", dir=out) as tmp:
        run_aggregate_replay(settings, intermediate, assets_csv, Path(tmp))
        shutil.move(str(Path(tmp) / AGGREGATES_FILE), str(out / AGGREGATES_FILE))
        undecodable = Path(tmp) / "telemetry.dlq.jsonl"
        if undecodable.exists() and undecodable.stat().st_size:  # cannot happen with records canonicalize wrote
            with open(out / "telemetry.dlq.jsonl", "ab") as fh:
                fh.write(undecodable.read_bytes())


#: flow name -> runner(settings, dump, assets_csv, out_dir): an explicit table, nothing registers itself.
REPLAYS: dict[str, Callable[..., None]] = {
    "canonicalize": _canonicalize,
    "aggregate": _aggregate,
    "pipeline": run_pipeline_replay,
    "dispatch": _dispatch,
    "alerts": _alerts,
}


def replay(settings, flow: str, dump: Path, assets_csv: Path, out: Path) -> None:
    if flow not in REPLAYS:
        raise UserError(f"no replay for flow {flow!r}; available: {', '.join(REPLAYS)}")
    if not dump.exists():
        raise UserError(f"input dump {dump} does not exist")
    from flows._common.registries import is_dsn

    if not is_dsn(assets_csv) and not Path(assets_csv).exists():
        raise UserError(f"assets file {assets_csv} does not exist")
    from sinks.dumps import check_dump

    check_dump(dump)  # a bad line stops the replay here, with its line number, before any output is written
    if out.exists():
        shutil.rmtree(out)  # a replay writes its whole output afresh: no mixing with an older run
    out.mkdir(parents=True)
    try:
        REPLAYS[flow](settings, dump, assets_csv, out)
    except Exception as exc:
        cause = _user_error_in(exc)
        if cause is None:
            raise
        shutil.rmtree(out, ignore_errors=True)  # half an output is no output: nothing of it can be trusted
        raise cause from None


def _user_error_in(exc: BaseException) -> UserError | None:
    """The UserError a flow raised, out of the bytewax runtime error that carries it (or None)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def publish_dump(settings, dump: Path) -> dict[str, int]:
    """Republish every record of a dump to the broker; returns counts per topic."""
    import orjson
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    from sinks.dumps import base_topic, check_dump, read_dump
    from sinks.kafka import producer_config
    from vpp.serde import TOPIC_SCHEMAS, Serde

    check_dump(dump)  # a bad line stops it before anything is published, not halfway through
    serde = None
    # log_level 2: librdkafka's per-attempt connection lines stay quiet; failures come back as errors here
    producer = Producer({**producer_config(settings), "log_level": 2})
    meta = AdminClient(client_config(settings, log_level=2)).list_topics(timeout=10)
    counts: dict[str, int] = {}
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    for rec in read_dump(dump):
        name = base_topic(rec.topic)
        topic = settings.topic(name) if name in settings.partitions else rec.topic
        if topic not in meta.topics:
            raise UserError(f"topic {topic} does not exist on {settings.broker} (is the stack up? vpp up)")
        if name in TOPIC_SCHEMAS and rec.payload is not None:
            serde = serde or Serde.from_settings(settings)
            value = serde.encode(topic, orjson.loads(rec.payload))
        else:
            value = rec.value
        kwargs: dict[str, Any] = {"timestamp": rec.ts or 0, "on_delivery": on_delivery}
        if rec.partition < len(meta.topics[topic].partitions):
            kwargs["partition"] = rec.partition
        while True:
            try:
                producer.produce(topic, value, rec.key, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:  # refused before it was sent (e.g. larger than the broker takes)
                errors.append(f"{topic} offset {rec.offset}: {exc.args[0].str() if exc.args else exc}")
                break
        counts[topic] = counts.get(topic, 0) + 1
    undelivered = producer.flush(60)
    if errors or undelivered:
        first = f", first: {errors[0]}" if errors else " (the broker did not confirm them within 60 s)"
        raise UserError(f"{len(errors) + undelivered} of {sum(counts.values())} records were not delivered{first}")
    return counts


def replay_schema_id(serde, value: bytes) -> bytes:
    """An Avro value that does not decode, with its schema id as a replay (local ids, ``Serde.local``) reads it.

    A dump keeps records as their JSON form, which a replay encodes again with local ids; a value that is not
    a record of its topic is kept as bytes, and its header names a schema by the REGISTRY's id, which means
    another schema (or none) among the local ids. So: a registry id of a schema this version knows becomes
    that schema's local id, an id the registry does not know becomes 0 (no local schema has it) when it would
    name a local one, and the bytes after the header stay as they were (truncated, junk: the same reason).
    """
    import struct

    from vpp.serde import Serde, SerdeError

    if len(value) < 5 or value[0] != 0:
        return value  # no Avro header: junk either way
    (schema_id,) = struct.unpack_from(">I", value, 1)
    local = Serde.local()
    try:
        name = serde._name_for_id(schema_id)
    except SerdeError:
        return value if schema_id not in local.by_id else value[:1] + struct.pack(">I", 0) + value[5:]
    local_id = next((i for i, n in local.by_id.items() if n == name), 0)
    return value[:1] + struct.pack(">I", local_id) + value[5:]


def dump_topic(settings, topic_name: str, out: Path, *, timeout_s: float = 60.0) -> int:
    """Write every message now in a topic as a kcat -J dump (Avro values as their JSON form; a value that is not
    a record of the topic as its bytes, with the schema id a replay reads (``replay_schema_id``); ``payload_b64``
    when they are not UTF-8)."""
    import gzip

    import orjson

    from sinks.dumps import base_topic, dump_line
    from sinks.kafka_tools import iter_topic
    from vpp.serde import TOPIC_SCHEMAS, Serde, SerdeError, to_json_value

    topic = settings.topic(topic_name) if topic_name in settings.partitions else topic_name
    avro = base_topic(topic) in TOPIC_SCHEMAS
    serde = Serde.from_settings(settings) if avro else None
    lines: dict[int, list[bytes]] = {}
    try:
        for msg in iter_topic(settings, topic, timeout_s=timeout_s):
            value = msg.value()
            if value is None:
                payload = None
            elif avro:
                try:
                    payload = orjson.dumps(to_json_value(serde.decode(value, topic))).decode()
                except SerdeError:  # poison (unknown schema, another topic's record, junk): kept, so a replay
                    payload = replay_schema_id(serde, value)  # dead-letters it as the live flow did
            else:
                payload = value  # dump_line keeps it exact (payload_b64) when it is not UTF-8
            key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
            lines.setdefault(msg.partition(), []).append(
                dump_line(topic, msg.partition(), msg.offset(), msg.timestamp()[1], key, payload))
    except (LookupError, TimeoutError) as exc:
        raise UserError(str(exc)) from exc
    opener = gzip.open if str(out).endswith(".gz") else open
    with opener(out, "wb") as fh:
        for p in sorted(lines):
            fh.writelines(lines[p])
    return sum(len(v) for v in lines.values())


def cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.to_broker:
        for topic, n in publish_dump(settings, Path(args.input)).items():
            print(f"published {n} records to {topic}")
        return 0
    source = args.assets_at or args.assets
    if not source or not args.out:
        raise UserError("replay needs --assets ASSETS.csv (or --assets-at DSN_OR_EXPORT) and --out DIR (or --to-broker)")
    if args.assets and args.assets_at:
        raise UserError("give --assets or --assets-at, not both")
    from flows._common.registries import is_dsn

    replay(settings, args.flow, Path(args.input), source if is_dsn(source) else Path(source), Path(args.out))
    for path in sorted(Path(args.out).glob("*.jsonl")):
        with open(path, "rb") as fh:
            print(f"{path}: {sum(1 for _ in fh)} records")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    n = dump_topic(load_settings(args), args.topic, Path(args.out))
    print(f"wrote {n} records to {args.out}")
    return 0


def add_commands(sub) -> None:
    p = command(sub, "replay", cmd_replay, help="run a flow over a kcat-format dump (no services), or republish a dump")
    p.add_argument("flow", help="canonicalize, aggregate, pipeline, dispatch (those installed)")
    p.add_argument("--input", required=True, help="kcat -J dump (plain or .gz)")
    p.add_argument("--assets", help="asset registry CSV (spec section 5)")
    p.add_argument("--assets-at", metavar="DSN_OR_EXPORT",
                   help="the registry through time: a PostgreSQL DSN, or `vpp assets export --history`; each reading "
                        "is enriched with the version valid at its timestamp")
    p.add_argument("--out", help="output directory for <topic>.jsonl files")
    p.add_argument("--to-broker", action="store_true", help="republish the dump into the running broker instead")
    d = command(sub, "dump", cmd_dump, help="write a topic's messages as a kcat -J dump (works where kcat cannot talk to Tansu)")
    d.add_argument("topic")
    d.add_argument("--out", required=True, help="output file (.gz to compress)")
