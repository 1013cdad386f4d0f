"""Dump files in kcat's ``-J`` format (spec telemetry.md section 6): a replayable source and output sinks.

A dump line is ``{"topic","partition","offset","tstype","ts","broker","key","payload"}``
where ``payload`` is the message as text. Gzip-compressed dumps are detected
by their magic bytes and read the same way.

``DumpSource`` yields ``DumpMessage`` tuples carrying the attributes of the
``KafkaSourceMessage`` the Kafka input yields, so a flow is the SAME dataflow
over a dump or a broker.
It has one partition (file order is the replay order) and resumes by line.

``ReplayFileSink`` writes ``DIR/<topic>.jsonl`` lines ``{"topic","key","value"}``
with the Avro-decoded value (timestamps epoch ms, bytes base64): the output
contract of section 6. Output is byte-identical for the same dump.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Iterator, NamedTuple

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sinks.messages import OutMessage
from vpp.errors import UserError

__all__ = ["DumpRecord", "read_dump", "open_dump", "check_dump", "DumpSource", "ReplayFileSink", "dump_line", "payload_fields", "base_topic",
           "canonical_jsonl_to_dump"]


@dataclass(frozen=True, slots=True)
class DumpRecord:
    topic: str
    partition: int
    offset: int
    ts: int | None
    key: str | None
    payload: str | None
    line: int
    raw: bytes | None = None  # the exact value when the line carries ``payload_b64`` (not valid UTF-8)

    @property
    def value(self) -> bytes | None:
        """The message value as the broker held it."""
        if self.raw is not None:
            return self.raw
        return None if self.payload is None else self.payload.encode("utf-8", "surrogatepass")


def payload_fields(value: bytes | None) -> dict[str, str | None]:
    """The ``payload`` of a kcat ``-J`` line for a message value, and ``payload_b64`` when it is not UTF-8.

    kcat prints the raw bytes of such a value into its JSON string, which JSON cannot carry. A dump
    here keeps the readable text (each bad byte as U+FFFD, what kcat users see) and, as an extension
    of the envelope, the exact bytes in base64: replay reads those, so a dead letter keeps the
    original bytes and a replay decides on the same input as the live flow.
    """
    if value is None:
        return {"payload": None}
    try:
        return {"payload": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload": value.decode("utf-8", "replace"), "payload_b64": base64.b64encode(value).decode("ascii")}


def open_dump(path: str | Path) -> IO[bytes]:
    fh = open(path, "rb")
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh)  # type: ignore[return-value]
    return fh


def read_dump(path: str | Path, *, skip_lines: int = 0) -> Iterator[DumpRecord]:
    """Records of a dump in file order; a malformed line raises naming its line number."""
    with open_dump(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno <= skip_lines or not line.strip():
                continue
            try:
                doc = orjson.loads(line)
                yield DumpRecord(
                    topic=str(doc["topic"]),
                    partition=int(doc.get("partition") or 0),
                    offset=int(doc.get("offset") or 0),
                    ts=int(doc["ts"]) if doc.get("ts") is not None else None,
                    key=doc.get("key"),
                    payload=doc.get("payload"),
                    line=lineno,
                    raw=base64.b64decode(doc["payload_b64"], validate=True) if doc.get("payload_b64") else None,
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise UserError(f"{path}:{lineno}: not a kcat -J dump line ({exc})") from exc


class DumpMessage(NamedTuple):
    """A dump record as a flow reads it: the fields of bytewax's ``KafkaSourceMessage`` that flows use.

    A NamedTuple rather than ``KafkaSourceMessage`` itself because replay builds one per line on the
    hot path: 0.35 µs against 1.9 µs. Flows only read attributes, so either serves.
    """

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: tuple[int, int]


def to_source_message(rec: DumpRecord) -> DumpMessage:
    key = None if rec.key is None else rec.key.encode()
    return DumpMessage(key, rec.value, rec.topic, rec.partition, rec.offset, (1, rec.ts or 0))


_new_message = tuple.__new__  # DumpMessage(...) through its generated __new__ costs a Python call per line


def _dump_messages(lines: list[bytes], first_lineno: int, path: Path) -> list[DumpMessage]:
    """Messages of consecutive dump lines (the first is line ``first_lineno``); blank lines are skipped.

    The replay hot path: one loop over a batch of lines, one tuple per line.
    A line that is not a kcat ``-J`` record raises naming its line number.
    """
    loads, out = orjson.loads, []
    append = out.append
    for i, line in enumerate(lines):
        try:
            d = loads(line)
            key, payload, ts = d.get("key"), d.get("payload"), d.get("ts")
            if "payload_b64" in d:  # a value that is not UTF-8, exact (see payload_fields)
                payload = None
                value = base64.b64decode(d["payload_b64"], validate=True)
            else:
                # a null payload is a tombstone: None, as the broker hands it over (flows dead-letter it as one)
                value = None if payload is None else payload.encode("utf-8", "surrogatepass")
            append(_new_message(DumpMessage, (
                None if key is None else key.encode(),
                value,
                str(d["topic"]), int(d.get("partition") or 0), int(d.get("offset") or 0),
                (1, int(ts) if ts else 0),
            )))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            if not line.strip():
                continue
            raise UserError(f"{path}:{first_lineno + i}: not a kcat -J dump line ({exc})") from exc
    return out


def check_dump(path: str | Path, *, batch_size: int = 10_000) -> int:
    """The number of records of a dump, read as the replay source reads it; a bad line or file raises why.

    A replay checks its dump first: inside the dataflow the same error would come out of bytewax's
    runtime as a panic and three tracebacks, after part of the output was written.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input dump {path} does not exist" if not path.exists() else f"input dump {path} is not a file")
    n, lineno, lines = 0, 1, []
    try:
        with open_dump(path) as fh:
            for line in fh:
                lines.append(line)
                if len(lines) == batch_size:
                    n += len(_dump_messages(lines, lineno, path))
                    lineno, lines = lineno + len(lines), []
            n += len(_dump_messages(lines, lineno, path))
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or damaged gzip file (BadGzipFile is an OSError)
        raise UserError(f"{path}: the file is damaged or cut short after line {lineno - 1 + len(lines)}: {exc}") from exc
    return n


class _DumpPartition(StatefulSourcePartition[DumpMessage, int]):
    """Resumes by line: its snapshot is the number of lines already handed to the flow."""

    def __init__(self, path: Path, resume_line: int | None, batch_size: int):
        self._path = path
        self._line = resume_line or 0
        self._fh = open_dump(path)
        for _ in islice(self._fh, self._line):
            pass
        self._batch_size = batch_size

    def next_batch(self) -> list[DumpMessage]:
        while True:
            lines = list(islice(self._fh, self._batch_size))
            if not lines:
                self._fh.close()
                raise StopIteration()
            batch = _dump_messages(lines, self._line + 1, self._path)
            self._line += len(lines)
            if batch:  # a batch of blank lines only: read on
                return batch

    def snapshot(self) -> int:
        return self._line

    def close(self) -> None:
        self._fh.close()


class DumpSource(FixedPartitionedSource[DumpMessage, int]):
    """A kcat-format dump (plain or gzip) as one ordered, resumable partition."""

    def __init__(self, path: str | Path, *, batch_size: int = 1000):
        self._path = Path(path)
        if not self._path.exists():
            raise UserError(f"dump {self._path} does not exist")
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [self._path.name]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _DumpPartition:
        return _DumpPartition(self._path, resume_state, self._batch_size)


def base_topic(topic: str) -> str:
    """A platform topic name without any deployment prefix ("t1234.telemetry.dlq" -> "telemetry.dlq")."""
    from vpp.config import TOPICS

    for name in TOPICS:
        if topic == name or topic.endswith("." + name):
            return name
    return topic


class _ReplayFilePartition(StatefulSinkPartition[OutMessage, None]):
    def __init__(self, out_dir: Path, serde):
        self._out_dir = out_dir
        self._serde = serde
        self._files: dict[str, IO[bytes]] = {}

    def _file(self, topic: str) -> IO[bytes]:
        fh = self._files.get(topic)
        if fh is None:
            fh = self._files[topic] = open(self._out_dir / f"{topic}.jsonl", "ab")
        return fh

    def write_batch(self, items: list[OutMessage]) -> None:
        from vpp.serde import to_json_value

        for m in items:
            topic = base_topic(m.topic)
            value = to_json_value(self._serde.decode(m.value))
            self._file(topic).write(orjson.dumps({"topic": topic, "key": m.key, "value": value}) + b"\n")
        for fh in self._files.values():
            fh.flush()

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


class ReplayFileSink(FixedPartitionedSink[OutMessage, None]):
    """``DIR/<topic>.jsonl`` per output topic; one partition so the order is the flow's order.

    Items are ``(key, OutMessage)`` as every fixed-partitioned sink takes; all go to one partition."""

    def __init__(self, out_dir: str | Path, serde, topics: tuple[str, ...] = ()):
        self._out_dir = Path(out_dir)
        self._out_dir.mkdir(parents=True, exist_ok=True)
        for topic in topics:  # every declared output exists, even when empty, and starts empty
            (self._out_dir / f"{topic}.jsonl").write_bytes(b"")
        self._serde = serde

    def list_parts(self) -> list[str]:
        return ["out"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ReplayFilePartition:
        return _ReplayFilePartition(self._out_dir, self._serde)


def dump_line(topic: str, partition: int, offset: int, ts_ms: int | None, key: str | None,
              payload: str | bytes | None) -> bytes:
    """One kcat ``-J`` line; a ``bytes`` payload as it is (``payload_fields``: exact when not UTF-8)."""
    fields = payload_fields(payload) if isinstance(payload, bytes) else {"payload": payload}
    return orjson.dumps({"topic": topic, "partition": partition, "offset": offset, "tstype": "create",
                         "ts": ts_ms, "broker": 0, "key": key, **fields}) + b"\n"


def canonical_jsonl_to_dump(jsonl: Path, dump: Path) -> int:
    """A replay's ``telemetry.canonical.jsonl`` as a one-partition kcat dump in the same order."""
    n = 0
    with open(jsonl, "rb") as src, open(dump, "wb") as dst:
        for line in src:
            if not line.strip():
                continue
            doc = orjson.loads(line)
            value = doc["value"]
            dst.write(dump_line("telemetry.canonical", 0, n, value["ts"], doc.get("key"), orjson.dumps(value).decode()))
            n += 1
    return n
