"""Avro schema resolution and the registry's compatibility levels, as pure functions.

Each rule of the Avro specification's "Schema Resolution" is a row; Hypothesis
checks invariants over generated schemas and that "compatible" agrees with
fastavro actually decoding generated data.
"""

from __future__ import annotations

import io
import itertools

import fastavro
import pytest
from fastavro.utils import generate_one
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.registry.compat import (
    COMPATIBILITY_LEVELS,
    InvalidSchemaError,
    canonical_schema_text,
    check_compatibility,
    is_compatible,
    parse_avro_schema,
    schema_fingerprint,
)


def record(name: str, *fields: dict, **extra) -> dict:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, type_, **extra) -> dict:
    return {"name": name, "type": type_, **extra}


def enum(name: str, *symbols: str, **extra) -> dict:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


LIST_NODE = record("Node", field("value", "int"), field("next", ["null", "Node"], default=None))
LIST_NODE_LONG = record("Node", field("value", "long"), field("next", ["null", "Node"], default=None))

# (rule, reader, writer, expected error type or None when compatible)
RESOLUTION_RULES = [
    ("same primitive", "int", "int", None),
    ("null reads null", "null", "null", None),
    ("int promotes to long", "long", "int", None),
    ("int promotes to float", "float", "int", None),
    ("int promotes to double", "double", "int", None),
    ("long promotes to float", "float", "long", None),
    ("long promotes to double", "double", "long", None),
    ("float promotes to double", "double", "float", None),
    ("string reads bytes", "string", "bytes", None),
    ("bytes reads string", "bytes", "string", None),
    ("no demotion long to int", "int", "long", "TYPE_MISMATCH"),
    ("no demotion double to float", "float", "double", "TYPE_MISMATCH"),
    ("string cannot read int", "string", "int", "TYPE_MISMATCH"),
    ("int cannot read boolean", "int", "boolean", "TYPE_MISMATCH"),
    ("record reads itself", record("R", field("a", "int")), record("R", field("a", "int")), None),
    ("writer-only field is ignored", record("R", field("a", "int")), record("R", field("a", "int"), field("b", "string")), None),
    ("reader-only field with default", record("R", field("a", "int"), field("b", "string", default="")), record("R", field("a", "int")), None),
    ("reader-only field without default", record("R", field("a", "int"), field("b", "string")), record("R", field("a", "int")), "READER_FIELD_MISSING_DEFAULT_VALUE"),
    ("field types resolve recursively", record("R", field("a", "long")), record("R", field("a", "int")), None),
    ("field type mismatch", record("R", field("a", "int")), record("R", field("a", "string")), "TYPE_MISMATCH"),
    ("records match by unqualified name", record("R", field("a", "int"), namespace="new.ns"), record("R", field("a", "int"), namespace="old.ns"), None),
    ("record names must match", record("R", field("a", "int")), record("S", field("a", "int")), "NAME_MISMATCH"),
    ("reader alias names the writer record", record("R", field("a", "int"), aliases=["S"]), record("S", field("a", "int")), None),
    ("reader field alias names the writer field", record("R", field("b", "int", aliases=["a"])), record("R", field("a", "int")), None),
    ("enum reads a subset of its symbols", enum("E", "A", "B", "C"), enum("E", "A", "B"), None),
    ("enum writer symbol missing from reader", enum("E", "A"), enum("E", "A", "B"), "MISSING_ENUM_SYMBOLS"),
    ("enum reader default covers missing symbols", enum("E", "A", "UNKNOWN", default="UNKNOWN"), enum("E", "A", "B"), None),
    ("enum names must match", enum("E", "A"), enum("F", "A"), "NAME_MISMATCH"),
    ("fixed of same name and size", {"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "F", "size": 4}, None),
    ("fixed sizes must match", {"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "F", "size": 8}, "FIXED_SIZE_MISMATCH"),
    ("fixed names must match", {"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "G", "size": 4}, "NAME_MISMATCH"),
    ("array items promote", {"type": "array", "items": "long"}, {"type": "array", "items": "int"}, None),
    ("array items mismatch", {"type": "array", "items": "int"}, {"type": "array", "items": "string"}, "TYPE_MISMATCH"),
    ("map values promote", {"type": "map", "values": "double"}, {"type": "map", "values": "float"}, None),
    ("map values mismatch", {"type": "map", "values": "int"}, {"type": "map", "values": "boolean"}, "TYPE_MISMATCH"),
    ("array cannot read map", {"type": "array", "items": "int"}, {"type": "map", "values": "int"}, "TYPE_MISMATCH"),
    ("reader union has the writer type", ["null", "string"], "string", None),
    ("reader union has a promotion of the writer type", ["null", "long"], "int", None),
    ("reader union lacks the writer type", ["null", "string"], "int", "MISSING_UNION_BRANCH"),
    ("every writer union branch resolves", ["null", "long"], ["null", "int"], None),
    ("a writer union branch does not resolve", ["null", "int"], ["null", "int", "string"], "MISSING_UNION_BRANCH"),
    ("non-union reader of a union writer", "long", ["int", "long"], None),
    ("non-union reader misses a writer branch", "int", ["null", "int"], "TYPE_MISMATCH"),
    ("logical type is an annotation", {"type": "long", "logicalType": "timestamp-millis"}, "long", None),
    ("logical types resolve on the underlying type", {"type": "long", "logicalType": "timestamp-millis"}, {"type": "int", "logicalType": "date"}, None),
    ("recursive record reads itself", LIST_NODE, LIST_NODE, None),
    ("recursive record promotes inside", LIST_NODE_LONG, LIST_NODE, None),
    ("recursive record mismatch is found", LIST_NODE, LIST_NODE_LONG, "TYPE_MISMATCH"),
    (
        "named reference resolves to its definition",
        record("Pair", field("a", record("P", field("x", "long"))), field("b", "P")),
        record("Pair", field("a", record("P", field("x", "int"))), field("b", "P")),
        None,
    ),
]


@pytest.mark.parametrize(("reader", "writer", "error_type"), [r[1:] for r in RESOLUTION_RULES], ids=[r[0] for r in RESOLUTION_RULES])
def test_avro_resolution_rule(reader, writer, error_type):
    problems = check_compatibility(reader, writer)

    if error_type is None:
        assert problems == []
    else:
        assert problems and all(p.startswith(error_type) for p in problems), problems


def test_messages_name_the_path_and_the_field():
    reader = record("R", field("a", "int"), field("nested", record("N", field("soc_pct", "int"))))
    writer = record("R", field("a", "int"), field("nested", record("N")))

    assert check_compatibility(reader, writer) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at '/fields/1/type/fields/0': field 'soc_pct' of record N is missing "
        "in the writer schema and has no default value in the reader"
    ]


V1 = record("R", field("a", "int"))
V1_PLUS_OPTIONAL = record("R", field("a", "int"), field("b", ["null", "string"], default=None))
V1_PLUS_REQUIRED = record("R", field("a", "int"), field("b", "string"))
EMPTY = record("R")
A_AS_STRING_WITH_DEFAULT = record("R", field("a", "string", default=""))

# (level, new schema, existing schemas oldest first, compatible?)
LEVEL_CASES = [
    ("BACKWARD", V1_PLUS_OPTIONAL, [V1], True),
    ("BACKWARD", V1_PLUS_REQUIRED, [V1], False),
    ("BACKWARD", EMPTY, [V1], True),
    ("FORWARD", V1_PLUS_REQUIRED, [V1], True),
    ("FORWARD", EMPTY, [V1], False),
    ("FORWARD", V1, [V1_PLUS_OPTIONAL], True),
    ("FULL", V1_PLUS_OPTIONAL, [V1], True),
    ("FULL", V1_PLUS_REQUIRED, [V1], False),
    ("FULL", EMPTY, [V1], False),
    ("NONE", "string", [V1], True),
    ("BACKWARD", "string", [], True),
    ("BACKWARD", A_AS_STRING_WITH_DEFAULT, [V1, EMPTY], True),  # only the latest counts
    ("BACKWARD_TRANSITIVE", A_AS_STRING_WITH_DEFAULT, [V1, EMPTY], False),
    ("FORWARD_TRANSITIVE", V1, [V1_PLUS_REQUIRED, V1_PLUS_OPTIONAL], False),
    ("FORWARD", V1, [V1_PLUS_REQUIRED, V1_PLUS_OPTIONAL], True),
    ("FULL_TRANSITIVE", V1_PLUS_OPTIONAL, [V1, V1_PLUS_OPTIONAL], True),
    ("FULL_TRANSITIVE", V1_PLUS_OPTIONAL, [V1_PLUS_REQUIRED, V1], False),
]


@pytest.mark.parametrize(("level", "new", "existing", "compatible"), LEVEL_CASES)
def test_compatibility_level(level, new, existing, compatible):
    assert (is_compatible(level, new, existing) == []) is compatible


def test_level_messages_say_which_version_and_which_direction():
    problems = is_compatible("FULL", V1_PLUS_REQUIRED, [V1], labels=["version 3"])

    assert len(problems) == 1
    assert problems[0].startswith("new schema cannot read data written with version 3: READER_FIELD_MISSING_DEFAULT_VALUE")


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown compatibility level 'SIDEWAYS'"):
        is_compatible("SIDEWAYS", V1, [V1])


def fixed(name: str, size, **extra) -> dict:
    return {"type": "fixed", "name": name, "size": size, **extra}


# (rule broken, schema): each is refused with InvalidSchemaError saying why
INVALID_SCHEMAS = [
    ("not json", '{"type": "record"'),
    ("not a schema at all", True),
    ("type is not a name", {"type": {"type": "int"}}),
    ("unknown type", {"type": "integer"}),
    ("unknown named type", record("R", field("a", "Nope"))),
    ("record without fields", {"type": "record", "name": "R"}),
    ("record fields not a list", {"type": "record", "name": "R", "fields": {}}),
    ("record field not an object", record("R", "a")),
    ("record field without type", record("R", {"name": "a"})),
    ("duplicate field", record("R", field("a", "int"), field("a", "long"))),
    ("bad field name", record("R", field("a-b", "int"))),
    ("dotted field name", record("R", field("a.b", "int"))),
    ("field name not a string", record("R", field(1, "int"))),
    ("bad field alias", record("R", field("a", "int", aliases=["1a"]))),
    ("bad field order", record("R", field("a", "int", order="up"))),
    ("bad record name", record("1R")),
    ("name not a string", {"type": "record", "name": 5, "fields": []}),
    ("primitive name for a named type", fixed("int", 4)),
    ("bad part in a dotted name", record("a..R")),
    ("bad part in a dotted name 2", record("a.1b.R")),
    ("bad namespace", record("T", namespace="bad ns!")),
    ("namespace with an empty part", record("T", namespace="a.")),
    ("namespace not a string", record("T", namespace=5)),
    ("bad record alias", record("R", aliases=["x y"])),
    ("enum without symbols", {"type": "enum", "name": "E"}),
    ("enum symbols not a list", {"type": "enum", "name": "E", "symbols": "AB"}),
    ("duplicate enum symbol", enum("E", "A", "A")),
    ("enum symbol not a name", enum("E", "1A")),
    ("enum symbol not a string", {"type": "enum", "name": "E", "symbols": [1]}),
    ("enum default not a symbol", enum("E", "A", default="B")),
    ("fixed without size", {"type": "fixed", "name": "F"}),
    ("fixed negative size", fixed("F", -1)),
    ("fixed size a string", fixed("F2", "abc")),
    ("fixed size a float", fixed("F", 1.5)),
    ("fixed size a boolean", fixed("F", True)),
    ("array without items", {"type": "array"}),
    ("map without values", {"type": "map"}),
    ("duplicate union branch", ["int", "int"]),
    ("duplicate union branch, one with a logical type", ["long", {"type": "long", "logicalType": "timestamp-millis"}]),
    ("two arrays in a union", [{"type": "array", "items": "int"}, {"type": "array", "items": "string"}]),
    ("two maps in a union", [{"type": "map", "values": "int"}, {"type": "map", "values": "string"}]),
    ("a named type twice in a union", [fixed("F", 1, namespace="n"), "n.F"]),
    ("union inside a union", ["null", ["int", "string"]]),
    ("default of the wrong type", record("R", field("a", "int", default="zero"))),
    ("union default of a later branch", record("R", field("a", ["null", "int"], default=5))),
    ("union default null for a non-null first branch", record("R", field("a", ["int", "null"], default=None))),
    ("int default out of range", record("R", field("a", "int", default=2**31))),
    ("int default a boolean", record("R", field("a", "int", default=True))),
    ("long default a float", record("R", field("a", "long", default=1.0))),
    ("double default a string", record("R", field("a", "double", default="NaN"))),
    ("bytes default beyond \\u00ff", record("R", field("a", "bytes", default="\u0100"))),
    ("fixed default of the wrong length", record("R", field("a", fixed("F", 2), default="abc"))),
    ("enum field default not a symbol", record("R", field("a", enum("E", "A"), default="B"))),
    ("array default with a bad item", record("R", field("a", {"type": "array", "items": "int"}, default=["x"]))),
    ("map default with a bad value", record("R", field("a", {"type": "map", "values": "int"}, default={"k": "x"}))),
    ("record default missing a field", record("R", field("a", record("S", field("x", "int")), default={}))),
    ("default of a referenced type", record("R", field("a", fixed("F", 1)), field("b", "F", default=5))),
]


@pytest.mark.parametrize("schema", [s for _, s in INVALID_SCHEMAS], ids=[n for n, _ in INVALID_SCHEMAS])
def test_invalid_schema_is_refused_with_a_reason(schema):
    with pytest.raises(InvalidSchemaError, match="invalid Avro schema|not valid JSON"):
        parse_avro_schema(schema)


# (rule, schema): near misses of the rules above that are valid Avro
VALID_SCHEMAS = [
    ("fixed of size 0", fixed("F", 0)),
    ("empty namespace is the null namespace", record("T", namespace="")),
    ("dotted namespace", record("T", namespace="vpp.telemetry_v2")),
    ("dotted full name", record("vpp.telemetry.T")),
    ("same short name in two namespaces of a union", [fixed("a.F", 1), fixed("b.F", 1)]),
    ("union default of the first branch", record("R", field("a", ["int", "null"], default=5))),
    ("null default of a union starting with null", record("R", field("a", ["null", "int"], default=None))),
    ("long default beyond int", record("R", field("a", "long", default=2**40))),
    ("double default an integer", record("R", field("a", "double", default=1))),
    ("bytes default in \\u0000-\\u00ff", record("R", field("a", "bytes", default="\u0000\u00ff"))),
    ("fixed default of the right length", record("R", field("a", fixed("F", 2), default="\u00ff\u0000"))),
    ("enum default a symbol", record("R", field("a", enum("E", "A", "B"), default="B"))),
    ("array default", record("R", field("a", {"type": "array", "items": "int"}, default=[1, 2]))),
    ("map default", record("R", field("a", {"type": "map", "values": "string"}, default={"k": "v"}))),
    ("record default completed by field defaults", record("R", field("a", record("S", field("x", "int", default=1)), default={}))),
    ("logical type default of the underlying type", record("R", field("d", {"type": "int", "logicalType": "date"}, default=0))),
    (
        "default of a type referenced by short name in a namespace",
        record("R", field("e", enum("E", "A")), field("a", "E", default="A"), field("b", "x.y.E", default="A"), namespace="x.y"),
    ),
    ("recursive record with a null default", LIST_NODE),
]


@pytest.mark.parametrize("schema", [s for _, s in VALID_SCHEMAS], ids=[n for n, _ in VALID_SCHEMAS])
def test_valid_schema_near_a_rule_is_accepted(schema):
    parse_avro_schema(schema)


def test_identity_ignores_whitespace_and_key_order():
    a = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}'
    b = '{"name":"R","fields":[{"type":"int","name":"a"}],"type":"record"}'

    assert schema_fingerprint(a) == schema_fingerprint(b)
    assert canonical_schema_text(a) == '{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}'
    assert schema_fingerprint(a) != schema_fingerprint(record("R", field("a", "long")))


# -- properties over generated schemas -----------------------------------------------

_PRIMITIVE = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes", "string"])
_LOGICAL = st.sampled_from([{"type": "long", "logicalType": "timestamp-millis"}, {"type": "int", "logicalType": "date"}])
_FIELD_NAMES = st.lists(st.sampled_from(["a", "b", "c", "soc_pct", "power_w", "device_id"]), unique=True, max_size=4)


def _union_key(schema) -> str:
    return schema if isinstance(schema, str) else schema.get("name", schema["type"])


def _extend(children):
    records = st.builds(
        lambda names, types: {"type": "record", "name": "?", "fields": [field(n, t) for n, t in zip(names, types, strict=False)]},
        _FIELD_NAMES,
        st.lists(children, min_size=4, max_size=4),
    )
    unions = st.lists(children.filter(lambda c: not isinstance(c, list)), min_size=1, max_size=3, unique_by=_union_key)
    return st.one_of(
        records,
        st.builds(lambda t: {"type": "array", "items": t}, children),
        st.builds(lambda t: {"type": "map", "values": t}, children),
        unions,
    )


def _name_types(schema, counter=None):
    """Give every named type a unique name (generated ones are all called '?')."""
    counter = counter if counter is not None else itertools.count()
    if isinstance(schema, list):
        return [_name_types(b, counter) for b in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("name") == "?":
        out["name"] = f"T{next(counter)}"
    if out["type"] == "record":
        out["fields"] = [{**f, "type": _name_types(f["type"], counter)} for f in out["fields"]]
    elif out["type"] == "array":
        out["items"] = _name_types(out["items"], counter)
    elif out["type"] == "map":
        out["values"] = _name_types(out["values"], counter)
    return out


_LEAVES = st.one_of(
    _PRIMITIVE,
    _LOGICAL,
    st.builds(lambda syms: {"type": "enum", "name": "?", "symbols": syms}, st.lists(st.sampled_from("ABCD"), min_size=1, unique=True)),
    st.builds(lambda n: {"type": "fixed", "name": "?", "size": n}, st.integers(1, 8)),
)
#: schemas whose named types are all still called "?": compose first, then ``_name_types``
_unnamed_schemas = st.recursive(_LEAVES, _extend, max_leaves=8)
avro_schemas = _unnamed_schemas.map(_name_types)
_unnamed_records = st.lists(_unnamed_schemas, max_size=4).map(
    lambda types: {"type": "record", "name": "?", "fields": [field(f"f{i}", t) for i, t in enumerate(types)]}
)

_WIDER = {"int": "long", "long": "double", "float": "double"}  # bytes->string would need UTF-8 data


def _widen(schema):
    """The same schema with primitives outside unions promoted (int->long, ...): readable by Avro rules."""
    if isinstance(schema, str):
        return _WIDER.get(schema, schema)
    if isinstance(schema, list) or schema.get("logicalType"):
        return schema
    if schema["type"] == "record":
        return {**schema, "fields": [{**f, "type": _widen(f["type"])} for f in schema["fields"]]}
    if schema["type"] == "array":
        return {**schema, "items": _widen(schema["items"])}
    if schema["type"] == "map":
        return {**schema, "values": _widen(schema["values"])}
    return schema


@settings(max_examples=200, deadline=None)
@given(avro_schemas)
def test_every_schema_is_compatible_with_itself_at_every_level(schema):
    assert check_compatibility(schema, schema) == []
    for level in COMPATIBILITY_LEVELS:
        assert is_compatible(level, schema, [schema, schema]) == []


@settings(max_examples=100, deadline=None)
@given(_unnamed_records, _unnamed_schemas.filter(lambda t: t != "null" and not isinstance(t, list)))
def test_adding_an_optional_field_with_a_default_is_fully_compatible(record_, added_type):
    old = _name_types(record_)
    new = _name_types({**record_, "fields": record_["fields"] + [field("added", ["null", added_type], default=None)]})

    assert is_compatible("FULL_TRANSITIVE", new, [old]) == []


@settings(max_examples=100, deadline=None)
@given(_unnamed_records.filter(lambda r: r["fields"]).map(_name_types))
def test_removing_a_field_without_default_breaks_forward_but_not_backward(old):
    new = {**old, "fields": old["fields"][1:]}

    assert is_compatible("BACKWARD", new, [old]) == []
    assert is_compatible("FORWARD", new, [old]) != []


@settings(max_examples=200, deadline=None)
@given(avro_schemas)
def test_compatible_means_fastavro_can_decode_the_data(writer):
    reader = _widen(writer)
    assert check_compatibility(reader, writer) == []

    # fastavro would coerce generated strings through logical types (a date in a union); the
    # bytes on the wire are those of the underlying types, so decode with the annotations removed
    plain_writer = fastavro.parse_schema(_without_logical_types(writer))
    datum = generate_one(plain_writer)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, plain_writer, datum)
    buffer.seek(0)
    fastavro.schemaless_reader(buffer, plain_writer, fastavro.parse_schema(_without_logical_types(reader)))


def _without_logical_types(schema):
    if isinstance(schema, list):
        return [_without_logical_types(b) for b in schema]
    if not isinstance(schema, dict):
        return schema
    if "logicalType" in schema:
        return schema["type"]
    if schema["type"] == "record":
        return {**schema, "fields": [{**f, "type": _without_logical_types(f["type"])} for f in schema["fields"]]}
    if schema["type"] == "array":
        return {**schema, "items": _without_logical_types(schema["items"])}
    if schema["type"] == "map":
        return {**schema, "values": _without_logical_types(schema["values"])}
    return schema
