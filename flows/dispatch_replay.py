"""``vpp replay dispatch``: the dispatch flow over a dump of ``telemetry.canonical`` and ``dispatch.commands``.

The dump mixes both topics (kcat ``-J`` lines, payload = the JSON form of the Avro record); the
flow reads them through one input so commands and readings keep the dump's order. Time is the
readings' event time only, so the same dump gives the same set points. Writes
``DIR/device.commands.jsonl``, ``DIR/dispatch.status.jsonl`` (and ``telemetry.dlq.jsonl``).
"""

from __future__ import annotations

from pathlib import Path

from vpp.replay_cli import register_replay

__all__ = ["replay_dispatch", "JsonDumpPorts"]


class JsonDumpPorts:
    """ReplayPorts whose input payloads are the JSON form of Avro records, encoded on the way in.

    ``flows.dispatch`` decodes Avro (what the broker carries); a dump written by ``vpp dump`` holds
    each record's JSON form, so the input step re-encodes it with the local serde first.
    """

    def __init__(self, dump: Path, out: Path, outputs: tuple[str, ...]):
        from sinks.ports import ReplayPorts

        self._inner = ReplayPorts(dump, out, outputs)
        self.serde = self._inner.serde

    def topic(self, name: str) -> str:
        return name

    def read(self, flow, step_id: str, topics: list[str]):
        from functools import partial

        import bytewax.operators as op

        return op.map(f"{step_id}_avro", self._inner.read(flow, step_id, topics), partial(_json_to_avro, self.serde))

    def write(self, step_id: str, stream) -> None:
        self._inner.write(step_id, stream)


def _json_to_avro(serde, msg):
    import orjson
    from bytewax.connectors.kafka import KafkaSourceMessage

    from sinks.dumps import base_topic
    from vpp.serde import SerdeError

    try:
        value = serde.encode(base_topic(msg.topic), orjson.loads(msg.value))
    except (orjson.JSONDecodeError, SerdeError):
        value = msg.value  # not JSON of the schema: decoding fails downstream and it becomes a dead letter
    return KafkaSourceMessage(key=msg.key, value=value, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                              timestamp=msg.timestamp)


def replay_dispatch(settings, dump: Path, assets_csv: Path, out: Path) -> None:
    from bytewax.testing import run_main

    from flows.dispatch import OUTPUT_TOPICS, build_flow, static_registry

    ports = JsonDumpPorts(dump, out, OUTPUT_TOPICS)
    run_main(build_flow(settings, ports=ports, assets=static_registry(assets_csv), store=None, wall_clock=None))


register_replay("dispatch", replay_dispatch)
