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
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import fastavro

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

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
#: writer type -> reader types that can read it (besides the same type)
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InvalidSchemaError(ValueError):
    """The text is not a valid Avro schema; the message says what is wrong."""


SchemaInput = Mapping[str, Any] | str | Sequence[Any]


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


def _invalid(path: str, reason: str) -> InvalidSchemaError:
    return InvalidSchemaError(f"invalid Avro schema at '{path or '/'}': {reason}")


def _valid_fullname(name: Any) -> bool:
    return isinstance(name, str) and all(_NAME_RE.match(part) for part in name.split("."))


_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_FIELD_ORDERS = frozenset({"ascending", "descending", "ignore"})


class _StructureChecker:
    """The Avro specification's rules fastavro does not enforce, checked on the raw JSON.

    Names and namespaces are dot-separated names; fixed sizes are non-negative
    integers; enum symbols are unique names; record fields are objects with
    unique names and a type; arrays have items and maps values; unions hold no
    unions and no two branches of the same type (named types by full name).
    Field defaults must be values of the field's type; for a union, of its
    first branch (``check_defaults``, once all named types are known).
    """

    def __init__(self) -> None:
        self.named: dict[str, tuple[dict, str]] = {}  # full name -> (definition, its namespace)
        self.defaults: list[tuple[Any, Any, str, str]] = []  # (field type, default, namespace, path)

    # -- structure -------------------------------------------------------------

    def check(self, schema: Any, namespace: str, path: str) -> None:
        if isinstance(schema, str):
            return
        if isinstance(schema, list):
            self._union(schema, namespace, path)
            return
        if not isinstance(schema, dict):
            raise _invalid(path, f"a schema is a type name, an object or a union (array), not {json.dumps(schema)}")
        kind = schema.get("type")
        if not isinstance(kind, str):
            raise _invalid(path, f"'type' must be a type name string, got {json.dumps(kind)}")
        if kind in _NAMED:
            namespace = self._named(schema, namespace, path)
        if kind in ("record", "error"):
            self._record(schema, namespace, path)
        elif kind == "enum":
            self._enum(schema, path)
        elif kind == "fixed":
            size = schema.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _invalid(path, f"fixed {schema['name']!r} needs a 'size' that is a non-negative integer, got {json.dumps(size)}")
        elif kind == "array":
            if "items" not in schema:
                raise _invalid(path, "array needs 'items'")
            self.check(schema["items"], namespace, f"{path}/items")
        elif kind == "map":
            if "values" not in schema:
                raise _invalid(path, "map needs 'values'")
            self.check(schema["values"], namespace, f"{path}/values")

    def _named(self, schema: dict, enclosing: str, path: str) -> str:
        """Checks name, namespace and aliases; records the type; returns its namespace."""
        name = schema.get("name")
        if not _valid_fullname(name):
            raise _invalid(path, f"bad name {json.dumps(name)}: a name is [A-Za-z_][A-Za-z0-9_]*, a full name such names joined by dots")
        own = schema.get("namespace")
        if own is not None and (not isinstance(own, str) or (own and not _valid_fullname(own))):
            raise _invalid(path, f"bad namespace {json.dumps(own)}: a namespace is names joined by dots (or empty)")
        namespace = _namespace_of(schema, enclosing)
        short = name.rpartition(".")[2]
        if short in _PRIMITIVES:
            raise _invalid(path, f"bad name {name!r}: primitive type names cannot name a {schema['type']}")
        aliases = schema.get("aliases", [])
        if not isinstance(aliases, list) or not all(_valid_fullname(a) for a in aliases):
            raise _invalid(path, f"bad aliases {json.dumps(aliases)}: a list of (full) names")
        self.named.setdefault(_qualify(short, namespace), (schema, namespace))
        return namespace

    def _record(self, schema: dict, namespace: str, path: str) -> None:
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise _invalid(path, f"record {schema['name']!r} needs a 'fields' list")
        names: set[str] = set()
        for i, f in enumerate(fields):
            field_path = f"{path}/fields/{i}"
            if not isinstance(f, dict):
                raise _invalid(field_path, f"a record field is an object, not {json.dumps(f)}")
            name = f.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise _invalid(field_path, f"bad field name {json.dumps(name)}")
            if name in names:
                raise _invalid(field_path, f"duplicate field {name!r}")
            names.add(name)
            if "type" not in f:
                raise _invalid(field_path, f"field {name!r} has no 'type'")
            aliases = f.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) and _NAME_RE.match(a) for a in aliases):
                raise _invalid(field_path, f"bad field aliases {json.dumps(aliases)}: a list of names")
            if "order" in f and f["order"] not in _FIELD_ORDERS:
                raise _invalid(field_path, f"bad field order {json.dumps(f['order'])}: ascending, descending or ignore")
            self.check(f["type"], namespace, f"{field_path}/type")
            if "default" in f:
                self.defaults.append((f["type"], f["default"], namespace, field_path))

    def _enum(self, schema: dict, path: str) -> None:
        symbols = schema.get("symbols")
        if not isinstance(symbols, list):
            raise _invalid(path, f"enum {schema['name']!r} needs a 'symbols' list")
        seen: set[str] = set()
        for symbol in symbols:
            if not isinstance(symbol, str) or not _NAME_RE.match(symbol):
                raise _invalid(path, f"bad enum symbol {json.dumps(symbol)}: symbols are names [A-Za-z_][A-Za-z0-9_]*")
            if symbol in seen:
                raise _invalid(path, f"duplicate enum symbol {symbol!r}")
            seen.add(symbol)
        if "default" in schema and schema["default"] not in seen:
            raise _invalid(path, f"enum default {json.dumps(schema['default'])} is not one of its symbols")

    def _union(self, branches: list, namespace: str, path: str) -> None:
        seen: set[str] = set()
        for i, branch in enumerate(branches):
            branch_path = f"{path}/{i}"
            if isinstance(branch, list):
                raise _invalid(branch_path, "unions may not immediately contain other unions")
            self.check(branch, namespace, branch_path)
            key = self._branch_key(branch, namespace)
            if key in seen:
                raise _invalid(branch_path, f"duplicate union branch {key!r}")
            seen.add(key)

    @staticmethod
    def _branch_key(branch: Any, namespace: str) -> str:
        """What makes union branches distinct: the type, for named types the full name."""
        if isinstance(branch, dict):
            if branch["type"] in _NAMED:
                return _qualify(branch["name"], _namespace_of(branch, namespace))
            branch = branch["type"]
        return branch if branch in _PRIMITIVES or branch in ("array", "map") else _qualify(branch, namespace)

    # -- defaults --------------------------------------------------------------

    def check_defaults(self) -> None:
        for type_, default, namespace, path in self.defaults:
            problem = self._default_problem(type_, default, namespace, set())
            if problem:
                raise _invalid(path, f"default {json.dumps(default)} is not a valid value of the field's type: {problem}")

    def _resolve(self, schema: Any, namespace: str) -> tuple[Any, str]:
        """A reference (``"Name"`` or ``{"type": "Name"}``) -> (its definition, its namespace)."""
        if isinstance(schema, dict) and schema["type"] not in _PRIMITIVES | _NAMED | {"array", "map"}:
            schema = schema["type"]
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            for full in (_qualify(schema, namespace), schema):
                if full in self.named:
                    return self.named[full]
            raise InvalidSchemaError(f"invalid Avro schema: unknown type {schema!r}")
        if isinstance(schema, dict) and schema["type"] in _NAMED:
            return schema, _namespace_of(schema, namespace)
        return schema, namespace

    def _default_problem(self, schema: Any, value: Any, namespace: str, fallbacks: set[int]) -> str | None:
        """Why ``value`` is not a value of ``schema`` as JSON-encoded in a default, or None if it is."""
        schema, namespace = self._resolve(schema, namespace)
        if isinstance(schema, list):
            if not schema:
                return "an empty union has no values"
            return self._default_problem(schema[0], value, namespace, fallbacks)  # only the first branch counts
        kind = schema if isinstance(schema, str) else schema["type"]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        integer = isinstance(value, int) and not isinstance(value, bool)
        if kind == "null":
            ok = value is None
        elif kind == "boolean":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = integer and _INT_RANGE[0] <= value <= _INT_RANGE[1]
        elif kind == "long":
            ok = integer and _LONG_RANGE[0] <= value <= _LONG_RANGE[1]
        elif kind in ("float", "double"):
            ok = number
        elif kind == "string":
            ok = isinstance(value, str)
        elif kind == "bytes":
            ok = isinstance(value, str) and all(ord(c) < 256 for c in value)
        elif kind == "fixed":
            ok = isinstance(value, str) and all(ord(c) < 256 for c in value) and len(value) == schema["size"]
        elif kind == "enum":
            ok = isinstance(value, str) and value in schema["symbols"]
        elif kind == "array":
            if not isinstance(value, list):
                return f"expected an array, got {json.dumps(value)}"
            return next(filter(None, (self._default_problem(schema["items"], v, namespace, fallbacks) for v in value)), None)
        elif kind == "map":
            if not isinstance(value, dict):
                return f"expected a map (object), got {json.dumps(value)}"
            return next(filter(None, (self._default_problem(schema["values"], v, namespace, fallbacks) for v in value.values())), None)
        else:  # record / error
            if not isinstance(value, dict):
                return f"expected a {schema['name']} record (object), got {json.dumps(value)}"
            for f in schema["fields"]:
                if f["name"] in value:
                    problem = self._default_problem(f["type"], value[f["name"]], namespace, fallbacks)
                elif "default" in f and id(f) not in fallbacks:
                    problem = self._default_problem(f["type"], f["default"], namespace, fallbacks | {id(f)})
                else:
                    problem = f"field {f['name']!r} of {schema['name']} is missing and has no usable default"
                if problem:
                    return problem
            return None
        if ok:
            return None
        return f"expected {_describe_kind(schema)}, got {json.dumps(value)}"


def _namespace_of(named: dict, enclosing: str) -> str:
    """The namespace of a named type: from a dotted name, else its own 'namespace', else the enclosing one."""
    if "." in named["name"]:
        return named["name"].rpartition(".")[0]
    own = named.get("namespace")
    return enclosing if own is None else own


def _qualify(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _describe_kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    kind = schema["type"]
    if kind == "fixed":
        return f"fixed {schema['name']} (a string of {schema['size']} bytes)"
    if kind == "enum":
        return f"a symbol of enum {schema['name']}"
    return kind


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
