"""The Avro structure rules a schema must follow before the registry stores it (the ones fastavro skips):
names, namespaces, defaults that match their field's type, enum symbols, fixed sizes, unions."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

__all__ = ["InvalidSchemaError", "SchemaInput"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InvalidSchemaError(ValueError):
    """The text is not a valid Avro schema; the message says what is wrong."""


SchemaInput = Mapping[str, Any] | str | Sequence[Any]


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
