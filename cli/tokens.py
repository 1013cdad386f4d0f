"""`vpp tokens create NAME [--expires-days N] | revoke ID | list`: API tokens (``Authorization: Bearer``).

``create`` prints the token once; only its SHA-256 is stored, so a lost token is revoked and replaced.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from cli.users import audited, auth_store
from cli.common import command, positive_int

__all__ = ["add_commands"]


def _cmd_create(args: argparse.Namespace) -> int:
    from console.auth import new_token

    token, digest = new_token()
    expires_in = timedelta(days=args.expires_days) if args.expires_days else None
    token_id, expires_at = audited(
        args, "tokens.create", args.name,
        lambda store: store.create_token(args.name, digest, kind="api", expires_in=expires_in),
        lambda created: {"token_id": created[0], "expires_at": created[1].isoformat() if created[1] else None})
    print(token)
    print(f"token {token_id} for {args.name}, expires {expires_at.isoformat() if expires_at else 'never'}; "
          "shown once: only its hash is stored", file=__import__("sys").stderr)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    audited(args, "tokens.revoke", str(args.token_id), lambda store: store.revoke_token(args.token_id))
    print(f"token {args.token_id} revoked")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for t in auth_store(args).list_tokens(args.name):
        state = "revoked" if t["revoked_at"] else "live"
        print(f"{t['token_id']:>6} {t['user_name']:<24} {t['kind']:<8} {state:<8} "
              f"expires {t['expires_at'].isoformat() if t['expires_at'] else 'never'}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("tokens", help="API tokens: create (printed once), revoke, list")
    actions = p.add_subparsers(dest="tokens_command", metavar="ACTION")
    actions.required = True
    c = command(actions, "create", _cmd_create, help="a new token for a user (printed once)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--expires-days", type=positive_int, default=None, metavar="N", help="expiry (default never)")
    r = command(actions, "revoke", _cmd_revoke, help="revoke a token by its id")
    r.add_argument("token_id", metavar="ID", type=positive_int)
    ls = command(actions, "list", _cmd_list, help="tokens (ids, owners, expiry; never the tokens themselves)")
    ls.add_argument("name", metavar="NAME", nargs="?", default=None)
