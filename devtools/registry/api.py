"""The schema registry's endpoints, without HTTP: ``(query, body, *path params) -> JSON-able result``.

``RegistryApi`` implements the subset of Confluent's REST API that clients use over a
``RegistryStore``; it raises ``RegistryError`` (HTTP status + Confluent error code) for every
refusal. ``devtools.registry.server`` maps HTTP requests onto it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from devtools.registry.compat import COMPATIBILITY_LEVELS, InvalidSchemaError, canonical_schema_text, is_compatible, schema_fingerprint
from devtools.registry.store import RegistryError, RegistryStore, SchemaNotFoundError, SubjectVersion

__all__ = ["RegistryApi"]

log = logging.getLogger("devtools.registry")

_MAX_VERSION = 2**31 - 1


def _invalid_schema(message: str) -> RegistryError:
    return RegistryError(message, http_status=422, error_code=42201)


def _parse_version(raw: str) -> int | None:
    """A version path segment: ``latest`` / ``-1`` -> None, else 1..2^31-1; anything else is 42202."""
    if raw == "latest" or raw == "-1":
        return None
    if re.fullmatch(r"[0-9]{1,10}", raw) and 1 <= int(raw) <= _MAX_VERSION:
        return int(raw)
    raise RegistryError(
        f"The specified version '{raw}' is not a valid version id. "
        'Allowed values are between [1, 2^31-1] and the string "latest"',
        http_status=422,
        error_code=42202,
    )


def _parse_level(body: Any) -> str:
    level = body.get("compatibility") or body.get("compatibilityLevel") if isinstance(body, dict) else None
    if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
        raise RegistryError(
            f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, full, "
            "backward_transitive, forward_transitive, and full_transitive",
            http_status=422,
            error_code=42203,
        )
    return level.upper()


def _schema_from_request(body: Any) -> tuple[str, str]:
    """Validate a register/lookup/compatibility body; returns (canonical text, fingerprint)."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str) or not body["schema"].strip():
        raise _invalid_schema('Empty schema: the request body must be a JSON object with a "schema" string')
    schema_type = str(body.get("schemaType") or "AVRO")
    if schema_type.upper() != "AVRO":
        raise _invalid_schema(
            f"Schema type {schema_type!r} is not supported: this registry only supports AVRO schemas"
        )
    if body.get("references"):
        raise _invalid_schema("Schema references are not supported by this registry; inline the referenced types")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported):
            raise _invalid_schema(f"'{unsupported}' (data contracts) is not supported by this registry")
    try:
        text = canonical_schema_text(body["schema"])
    except InvalidSchemaError as exc:
        raise _invalid_schema(f"Invalid schema {body['schema']}: {exc}") from exc
    return text, schema_fingerprint(text)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _version_body(row: SubjectVersion) -> dict[str, Any]:
    return {"subject": row.subject, "version": row.version, "id": row.schema_id, "schema": row.schema_text}


class RegistryApi:
    """Endpoint implementations: (query, body, *path params) -> JSON-able result."""

    def __init__(self, store: RegistryStore):
        self.store = store

    def root(self, q, body):
        return {}

    def schema_types(self, q, body):
        return ["AVRO"]

    def list_subjects(self, q, body):
        subjects = self.store.subjects(include_deleted=_flag(q, "deleted") or _flag(q, "deleted_only"))
        if _flag(q, "deleted_only"):
            live = set(self.store.subjects())
            subjects = [s for s in subjects if s not in live]
        prefix = q.get("subjectPrefix", [""])[-1]
        return _page([s for s in subjects if s.startswith(prefix)], q)

    def list_versions(self, q, body, subject):
        versions = self.store.versions(subject, include_deleted=_flag(q, "deleted") or _flag(q, "deleted_only"))
        if _flag(q, "deleted_only"):
            live = {row.version for row in self.store.live_versions(subject)}
            versions = [v for v in versions if v not in live]
        return _page(versions, q)

    def associations(self, q, body, namespace, resource):
        return []  # associations are not supported; an empty list lets clients fall back to topic naming

    def register(self, q, body, subject):
        text, fingerprint = _schema_from_request(body)
        reg = self.store.register(subject, text, fingerprint)
        if reg.created:
            log.info("registered schema id %d as %s version %d", reg.schema_id, subject, reg.version)
        return {"id": reg.schema_id, "subject": reg.subject, "version": reg.version}

    def lookup(self, q, body, subject):
        text, fingerprint = _schema_from_request(body)
        row = self.store.find_in_subject(subject, fingerprint, include_deleted=_flag(q, "deleted"))
        return _version_body(row)

    def delete_subject(self, q, body, subject):
        return self.store.delete_subject(subject, permanent=_flag(q, "permanent"))

    def get_version(self, q, body, subject, version):
        number = _parse_version(version)
        return _version_body(self.store.subject_version(subject, number, include_deleted=_flag(q, "deleted")))

    def get_version_schema(self, q, body, subject, version):
        number = _parse_version(version)
        return json.loads(self.store.subject_version(subject, number, include_deleted=_flag(q, "deleted")).schema_text)

    def delete_version(self, q, body, subject, version):
        number = _parse_version(version)
        return self.store.delete_version(subject, number, permanent=_flag(q, "permanent"))

    def schema_by_id(self, q, body, schema_id):
        return {"schema": self.store.schema_text(_schema_id(schema_id))}

    def schema_text_by_id(self, q, body, schema_id):
        return json.loads(self.store.schema_text(_schema_id(schema_id)))

    def schema_id_versions(self, q, body, schema_id):
        usages = self.store.schema_usages(_schema_id(schema_id), include_deleted=_flag(q, "deleted"))
        return [{"subject": s, "version": v} for s, v in usages]

    def schema_id_subjects(self, q, body, schema_id):
        usages = self.store.schema_usages(_schema_id(schema_id), include_deleted=_flag(q, "deleted"))
        return sorted({s for s, _ in usages})

    def test_against_version(self, q, body, subject, version):
        text, _ = _schema_from_request(body)
        number = _parse_version(version)
        if number is None and not self.store.live_versions(subject):
            return _compat_result([], q)  # nothing registered yet: anything is compatible
        row = self.store.subject_version(subject, number)
        level = self.store.effective_config(subject)
        return _compat_result(is_compatible(level, text, [row.schema_text], labels=[f"version {row.version}"]), q)

    def test_against_all(self, q, body, subject):
        text, _ = _schema_from_request(body)
        rows = self.store.live_versions(subject)
        level = self.store.effective_config(subject)
        problems = is_compatible(level, text, [r.schema_text for r in rows], labels=[f"version {r.version}" for r in rows])
        return _compat_result(problems, q)

    def get_global_config(self, q, body):
        return {"compatibilityLevel": self.store.get_config()}

    def put_global_config(self, q, body):
        level = _parse_level(body)
        self.store.set_config(level)
        return {"compatibility": level}

    def delete_global_config(self, q, body):
        removed = self.store.delete_config()
        return {"compatibilityLevel": removed or self.store.get_config()}

    def get_subject_config(self, q, body, subject):
        level = self.store.get_config(subject)
        if level is None and _flag(q, "defaultToGlobal"):
            level = self.store.get_config()
        if level is None:
            raise _no_subject_config(subject)
        return {"compatibilityLevel": level}

    def put_subject_config(self, q, body, subject):
        level = _parse_level(body)
        self.store.set_config(level, subject)
        return {"compatibility": level}

    def delete_subject_config(self, q, body, subject):
        removed = self.store.delete_config(subject)
        if removed is None:
            raise _no_subject_config(subject)
        return {"compatibilityLevel": removed}


def _page(items: list[Any], q: dict[str, list[str]]) -> list[Any]:
    """Confluent's offset/limit pagination (a negative limit means no limit)."""
    try:
        offset = max(int(q.get("offset", ["0"])[-1]), 0)
        limit = int(q.get("limit", ["-1"])[-1])
    except ValueError as exc:
        raise RegistryError(f"offset and limit must be integers: {exc}", http_status=400, error_code=400) from exc
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _schema_id(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        raise SchemaNotFoundError(f"Schema {raw} not found: ids are positive integers")
    return int(raw)


def _no_subject_config(subject: str) -> RegistryError:
    return RegistryError(
        f"Subject '{subject}' does not have subject-level compatibility configured",
        http_status=404,
        error_code=40408,
    )


def _compat_result(problems: list[str], q: dict[str, list[str]]) -> dict[str, Any]:
    result: dict[str, Any] = {"is_compatible": not problems}
    if _flag(q, "verbose"):
        result["messages"] = problems
    return result
