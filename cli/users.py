"""`vpp users add NAME --role ROLE | list | disable NAME`: the operators of the console and API.

The password is read from standard input (one line; typed without echo on a terminal), never from an
argument, so it stays out of shell history and ``ps``. Every change is written to the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any, Callable, TypeVar

from cli.common import command, load_settings
from vpp.errors import UserError

T = TypeVar("T")

__all__ = ["add_commands", "read_password", "cli_actor", "audited", "auth_store"]


def cli_actor() -> str:
    """Who acts from the command line, as the audit log names them."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def read_password(stream=None) -> str:
    """One password from standard input: asked twice without echo on a terminal, else its first line."""
    stream = stream or sys.stdin
    if stream.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UserError("the two passwords differ")
        return first
    line = stream.readline()
    if not line:
        raise UserError("no password on standard input (e.g. printf '%s\\n' \"$PW\" | vpp users add NAME --role viewer)")
    return line.rstrip("\r\n")


def auth_store(args):
    """The auth store on the settings' database."""
    from sinks.auth_store import AuthStore

    return AuthStore(load_settings(args).postgres_dsn)


def audited(args: argparse.Namespace, action: str, target: str, change: Callable[[Any], T],
            detail: Callable[[T], dict] | None = None) -> T:
    """``change(store)`` on the auth store, written to the audit log as ``action`` on ``target``: its
    ``detail(result)`` when done, the reason when refused (then a ``UserError``)."""
    from sinks.auth_store import AuthError

    store = auth_store(args)
    try:
        result = change(store)
    except AuthError as exc:
        store.audit(cli_actor(), action, target=target, address="local", outcome=f"refused: {exc}")
        raise UserError(str(exc)) from None
    store.audit(cli_actor(), action, target=target, address="local", outcome="ok",
                detail=detail(result) if detail else None)
    return result


def _cmd_add(args: argparse.Namespace) -> int:
    from console.auth import password_problem

    password = read_password()
    problem = password_problem(password)
    if problem:
        raise UserError(problem)
    audited(args, "users.add", args.name, lambda store: store.add_user(args.name, args.role, password),
            lambda _: {"role": args.role})
    print(f"user {args.name} added with role {args.role}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    users = auth_store(args).list_users()
    if args.json:
        print(json.dumps([{**u, "created_at": u["created_at"].isoformat()} for u in users], indent=2))
        return 0
    for u in users:
        print(f"{u['name']:<24} {u['role']:<9} {'disabled' if u['disabled'] else 'enabled':<9} {u['created_at']:%Y-%m-%d %H:%M}")
    if not users:
        print("no users yet: vpp users add NAME --role admin (password on standard input)")
    return 0


def _cmd_disable(args: argparse.Namespace) -> int:
    audited(args, "users.disable", args.name, lambda store: store.disable_user(args.name))
    print(f"user {args.name} disabled; their tokens are revoked")
    return 0


def add_commands(sub) -> None:
    from console.auth import ROLES

    p = sub.add_parser("users", help="operators of the API and console: add, list, disable")
    actions = p.add_subparsers(dest="users_command", metavar="ACTION")
    actions.required = True
    a = command(actions, "add", _cmd_add, help="add a user (password read from standard input)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", required=True, choices=ROLES)
    ls = command(actions, "list", _cmd_list, help="every user, role and whether disabled")
    ls.add_argument("--json", action="store_true")
    d = command(actions, "disable", _cmd_disable, help="disable a user and revoke their tokens")
    d.add_argument("name", metavar="NAME")
