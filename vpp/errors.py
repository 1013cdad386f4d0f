"""Errors the CLI reports as one clear line instead of a traceback."""


class UserError(Exception):
    """Something the user can fix: a missing binary, a bad file, a stopped stack."""
