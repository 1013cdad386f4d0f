"""Avro schema parsing and compatibility checking, as the schema registry applies it.

Pure functions, no I/O. The resolution rules are those of the Avro
specification ("Schema Resolution"), checked the way Avro's own
``SchemaCompatibility`` does:

* records match by unqualified name, full name, or a reader alias; a reader
  field missing from the writer needs a default; writer-only fields are skipped;
* promotions int->long/float/double, long->float/double, float->double,
  string<->bytes;
* an enum symbol the writer may send but the reader lacks is an error unless
  the reader enum declares a default; fixed types must agree on name and size;
* arrays and maps recurse into items and values;
* a writer union is readable when each of its branches is; a reader union
  reads a non-union writer when some branch does;
* logical types are annotations: resolution looks at the underlying type.

``is_compatible`` lifts the pairwise check to the registry's compatibility
levels (BACKWARD, FORWARD, FULL, their _TRANSITIVE forms, and NONE).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import fastavro

from devtools.registry.structure import _NAMED, _PRIMITIVES, InvalidSchemaError, SchemaInput, _StructureChecker

#: writer type -> reader types that can read it (besides the same type)
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

__all__ = [
    "COMPATIBILITY_LEVELS",
    "InvalidSchemaError",
    "parse_avro_schema",
    "canonical_schema_text",
    "schema_fingerprint",
    "check_compatibility",
    "is_compatible",
]

COMPATIBILITY_LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)

def _load_json(schema: SchemaInput) -> Any:
    if not isinstance(schema, str):
        return schema
    if schema.strip() in _PRIMITIVES:  # a bare primitive name such as int (or null, not JSON's null)
        return schema.strip()
    try:
        return json.loads(schema)
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(f"schema is not valid JSON: {exc}") from exc


def parse_avro_schema(schema: SchemaInput) -> Any:
    """Validate an Avro schema (JSON text or its decoded form) and return it with full names.

    Raises ``InvalidSchemaError`` with the reason when the schema is invalid.
    """
    obj = _load_json(schema)
    checker = _StructureChecker()
    checker.check(obj, "", "")  # on the raw JSON first: fastavro fills in a missing "fields" and skips some rules
    try:
        parsed = fastavro.parse_schema(obj, _write_hint=False)
    except Exception as exc:  # fastavro raises several types for bad input; all mean "invalid"
        raise InvalidSchemaError(f"invalid Avro schema: {type(exc).__name__}: {exc}") from exc
    checker.check_defaults()  # needs every named type, which fastavro has just confirmed are all defined
    return parsed


def canonical_schema_text(schema: SchemaInput) -> str:
    """The stored form of a schema: compact JSON, author's key order kept. Validates first."""
    parse_avro_schema(schema)
    return json.dumps(_load_json(schema), separators=(",", ":"), ensure_ascii=False)


def schema_fingerprint(schema: SchemaInput) -> str:
    """Identity of a schema for id reuse: SHA-256 of its JSON with sorted keys and no whitespace."""
    text = json.dumps(_load_json(schema), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- pairwise resolution -------------------------------------------------------


def _collect_named(schema: Any, out: dict[str, dict]) -> dict[str, dict]:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, out)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            out[schema["name"]] = schema
        if kind in ("record", "error"):
            for f in schema["fields"]:
                _collect_named(f["type"], out)
        elif kind == "array":
            _collect_named(schema["items"], out)
        elif kind == "map":
            _collect_named(schema["values"], out)
    return out


def _short(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "union[" + ", ".join(_describe(b) for b in schema) + "]"
    if isinstance(schema, dict):
        kind = schema["type"]
        return f"{kind} {schema['name']}" if kind in _NAMED else kind
    return str(schema)


@dataclass
class _Resolver:
    reader_names: dict[str, dict]
    writer_names: dict[str, dict]
    visited: set[tuple[str, str]]

    def deref(self, schema: Any, names: dict[str, dict]) -> Any:
        if isinstance(schema, dict) and schema["type"] not in _PRIMITIVES | _NAMED | {"array", "map"}:
            schema = schema["type"]  # {"type": "some.Named"} is a reference too
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return names[schema]
        return schema

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        reader = self.deref(reader, self.reader_names)
        writer = self.deref(writer, self.writer_names)
        if isinstance(writer, list):
            return self._writer_union(reader, writer, path)
        if isinstance(reader, list):
            return self._reader_union(reader, writer, path)
        r_kind = reader if isinstance(reader, str) else reader["type"]
        w_kind = writer if isinstance(writer, str) else writer["type"]
        if r_kind == "error":
            r_kind = "record"
        if w_kind == "error":
            w_kind = "record"
        if r_kind != w_kind:
            if r_kind in _PROMOTIONS.get(w_kind, ()):
                return []
            return [f"TYPE_MISMATCH at '{path or '/'}': reader type {_describe(reader)} cannot read writer type {_describe(writer)}"]
        if r_kind in _NAMED:
            if not self._names_match(reader, writer):
                return [
                    f"NAME_MISMATCH at '{path or '/'}': reader {r_kind} {reader['name']} does not match writer {w_kind} {writer['name']}"
                    " (names differ and no reader alias names the writer)"
                ]
            pair = (reader["name"], writer["name"])
            if pair in self.visited:  # recursive type already being compared
                return []
            self.visited.add(pair)
            return getattr(self, f"_{r_kind}")(reader, writer, path)
        if r_kind == "array":
            return self.check(reader["items"], writer["items"], f"{path}/items")
        if r_kind == "map":
            return self.check(reader["values"], writer["values"], f"{path}/values")
        return []

    def _names_match(self, reader: dict, writer: dict) -> bool:
        r_full, w_full = reader["name"], writer["name"]
        if r_full == w_full or _short(r_full) == _short(w_full):
            return True
        namespace = r_full.rpartition(".")[0]
        for alias in reader.get("aliases", ()):
            full_alias = alias if "." in alias or not namespace else f"{namespace}.{alias}"
            if w_full in (alias, full_alias):
                return True
        return False

    def _writer_union(self, reader: Any, writer: list, path: str) -> list[str]:
        problems: list[str] = []
        for i, branch in enumerate(writer):
            problems.extend(self.check(reader, branch, f"{path}/{i}"))
        return problems

    def _reader_union(self, reader: list, writer: Any, path: str) -> list[str]:
        for branch in reader:
            trial = _Resolver(self.reader_names, self.writer_names, set(self.visited))
            if not trial.check(branch, writer, path):
                self.visited |= trial.visited
                return []
        return [
            f"MISSING_UNION_BRANCH at '{path or '/'}': reader {_describe(reader)} has no branch "
            f"that can read writer type {_describe(writer)}"
        ]

    def _record(self, reader: dict, writer: dict, path: str) -> list[str]:
        problems: list[str] = []
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for i, field in enumerate(reader["fields"]):
            field_path = f"{path}/fields/{i}"
            match = next(
                (writer_fields[n] for n in (field["name"], *field.get("aliases", ())) if n in writer_fields),
                None,
            )
            if match is not None:
                problems.extend(self.check(field["type"], match["type"], f"{field_path}/type"))
            elif "default" not in field:
                problems.append(
                    f"READER_FIELD_MISSING_DEFAULT_VALUE at '{field_path}': field '{field['name']}' of record "
                    f"{reader['name']} is missing in the writer schema and has no default value in the reader"
                )
        return problems

    def _enum(self, reader: dict, writer: dict, path: str) -> list[str]:
        reader_symbols = set(reader["symbols"])
        missing = [s for s in writer["symbols"] if s not in reader_symbols]
        if missing and "default" not in reader:
            return [
                f"MISSING_ENUM_SYMBOLS at '{path or '/'}': reader enum {reader['name']} lacks writer symbols "
                f"{missing} and declares no default symbol"
            ]
        return []

    def _fixed(self, reader: dict, writer: dict, path: str) -> list[str]:
        if reader["size"] != writer["size"]:
            return [
                f"FIXED_SIZE_MISMATCH at '{path or '/'}': reader fixed {reader['name']} has size {reader['size']}, "
                f"writer fixed {writer['name']} has size {writer['size']}"
            ]
        return []


def check_compatibility(reader_schema: SchemaInput, writer_schema: SchemaInput) -> list[str]:
    """Problems a reader with ``reader_schema`` would have decoding data written with ``writer_schema``.

    An empty list means compatible. Raises ``InvalidSchemaError`` if either schema is invalid.
    """
    reader = parse_avro_schema(reader_schema)
    writer = parse_avro_schema(writer_schema)
    resolver = _Resolver(_collect_named(reader, {}), _collect_named(writer, {}), set())
    return resolver.check(reader, writer, "")


def is_compatible(
    level: str,
    new_schema: SchemaInput,
    existing_schemas_oldest_first: Sequence[SchemaInput],
    *,
    labels: Iterable[str] | None = None,
) -> list[str]:
    """Problems registering ``new_schema`` after ``existing_schemas_oldest_first`` under ``level``.

    BACKWARD: the new schema reads data written with the latest one; FORWARD: the
    latest reads data written with the new one; FULL: both. The _TRANSITIVE forms
    check against every existing schema instead of the latest only. ``labels``
    name the existing schemas in messages (default: "existing schema #i").
    """
    level = level.upper()
    if level not in COMPATIBILITY_LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; expected one of {', '.join(COMPATIBILITY_LEVELS)}")
    existing = list(existing_schemas_oldest_first)
    names = list(labels) if labels is not None else [f"existing schema #{i + 1}" for i in range(len(existing))]
    if len(names) != len(existing):
        raise ValueError(f"got {len(names)} labels for {len(existing)} existing schemas")
    if level == "NONE" or not existing:
        return []
    parse_avro_schema(new_schema)
    pairs = list(zip(existing, names, strict=True))
    if not level.endswith("_TRANSITIVE"):
        pairs = pairs[-1:]
    problems: list[str] = []
    for old, label in reversed(pairs):  # newest first, as Confluent reports
        if level.startswith(("BACKWARD", "FULL")):
            problems.extend(f"new schema cannot read data written with {label}: {p}" for p in check_compatibility(new_schema, old))
        if level.startswith(("FORWARD", "FULL")):
            problems.extend(f"{label} cannot read data written with the new schema: {p}" for p in check_compatibility(old, new_schema))
    return problems
