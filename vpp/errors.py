"""Errors the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations

__all__ = ["UserError", "first_line"]


class UserError(Exception):
    """Something the user can fix: a missing binary, a bad file, a stopped stack."""


def first_line(text: str) -> str:
    """The first non-blank line of a (possibly multi-line) library message, stripped."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")
