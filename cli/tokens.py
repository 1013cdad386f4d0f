"""`vpp tokens create NAME [--expires-days N] | revoke ID | list`: API tokens (``Authorization: Bearer``).

``create`` prints the token once; only its SHA-256 is stored, so a lost token is revoked and replaced.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from cli.users import cli_actor
from cli.common import add_common, load_settings, positive_int
from vpp.errors import UserError

__all__ = ["add_commands"]


def _store(args):
    from sinks.auth_store import AuthStore

    return AuthStore(load_settings(args).postgres_dsn)


def _cmd_create(args: argparse.Namespace) -> int:
    from console.auth import new_token
    from sinks.auth_store import AuthError

    store = _store(args)
    token, digest = new_token()
    expires_in = timedelta(days=args.expires_days) if args.expires_days else None
    try:
        token_id, expires_at = store.create_token(args.name, digest, kind="api", expires_in=expires_in)
    except AuthError as exc:
        raise UserError(str(exc)) from None
    store.audit(cli_actor(), "tokens.create", target=args.name, address="local", outcome="ok",
                detail={"token_id": token_id, "expires_at": expires_at.isoformat() if expires_at else None})
    print(token)
    print(f"token {token_id} for {args.name}, expires {expires_at.isoformat() if expires_at else 'never'}; "
          "shown once: only its hash is stored", file=__import__("sys").stderr)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from sinks.auth_store import AuthError

    store = _store(args)
    try:
        store.revoke_token(args.token_id)
    except AuthError as exc:
        raise UserError(str(exc)) from None
    store.audit(cli_actor(), "tokens.revoke", target=str(args.token_id), address="local", outcome="ok")
    print(f"token {args.token_id} revoked")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for t in _store(args).list_tokens(args.name):
        state = "revoked" if t["revoked_at"] else "live"
        print(f"{t['token_id']:>6} {t['user_name']:<24} {t['kind']:<8} {state:<8} "
              f"expires {t['expires_at'].isoformat() if t['expires_at'] else 'never'}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("tokens", help="API tokens: create (printed once), revoke, list")
    actions = p.add_subparsers(dest="tokens_command", metavar="ACTION")
    actions.required = True
    c = actions.add_parser("create", help="a new token for a user (printed once)")
    add_common(c)
    c.add_argument("name", metavar="NAME")
    c.add_argument("--expires-days", type=positive_int, default=None, metavar="N", help="expiry (default never)")
    c.set_defaults(func=_cmd_create)
    r = actions.add_parser("revoke", help="revoke a token by its id")
    add_common(r)
    r.add_argument("token_id", metavar="ID", type=positive_int)
    r.set_defaults(func=_cmd_revoke)
    ls = actions.add_parser("list", help="tokens (ids, owners, expiry; never the tokens themselves)")
    add_common(ls)
    ls.add_argument("name", metavar="NAME", nargs="?", default=None)
    ls.set_defaults(func=_cmd_list)
