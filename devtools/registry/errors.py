"""The registry's refusals, each with its Confluent error code and HTTP status."""

from __future__ import annotations

__all__ = ["RegistryError", "SubjectNotFoundError", "VersionNotFoundError", "SchemaNotFoundError",
           "SubjectSoftDeletedError", "SubjectNotSoftDeletedError", "IncompatibleSchemaError"]


class RegistryError(Exception):
    """An error with Confluent's HTTP status and error code; the message is shown to the client."""

    def __init__(self, message: str, *, http_status: int = 500, error_code: int = 50001):
        super().__init__(message)
        self.message, self.http_status, self.error_code = message, http_status, error_code


class SubjectNotFoundError(RegistryError):
    def __init__(self, subject: str):
        super().__init__(f"Subject '{subject}' not found.", http_status=404, error_code=40401)


class VersionNotFoundError(RegistryError):
    def __init__(self, subject: str, version: int | str):
        super().__init__(f"Version {version} not found for subject '{subject}'.", http_status=404, error_code=40402)


class SchemaNotFoundError(RegistryError):
    def __init__(self, detail: str = "Schema not found"):
        super().__init__(detail, http_status=404, error_code=40403)


class SubjectSoftDeletedError(RegistryError):
    def __init__(self, subject: str):
        message = f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
        super().__init__(message, http_status=404, error_code=40404)


class SubjectNotSoftDeletedError(RegistryError):
    def __init__(self, subject: str):
        message = f"Subject '{subject}' was not deleted first before being permanently deleted"
        super().__init__(message, http_status=404, error_code=40405)


class IncompatibleSchemaError(RegistryError):
    def __init__(self, subject: str, problems: list[str], level: str):
        self.problems = problems
        message = (
            f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
            f"details: [{', '.join(problems)}, compatibility: '{level}']"
        )
        super().__init__(message, http_status=409, error_code=409)
