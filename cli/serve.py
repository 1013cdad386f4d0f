"""`vpp serve [--host H] [--port P]`: the operators' API and web console (FastAPI on uvicorn).

The session-cookie key comes from the file named by the setting ``session_key_file`` (a Kubernetes
Secret mounted as a file), else from ``<state dir>/console-session.key``, created on first use with
mode 0600: never from the command line. The URL is written to ``<state dir>/api.json`` so that
``vpp status --json`` shows it under ``api``; the file goes when the server stops.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
from pathlib import Path

from cli.common import command, load_settings
from vpp.errors import UserError

__all__ = ["add_commands", "session_key", "API_FILE", "ensure_demo_user", "wait_for_api"]

API_FILE = "api.json"


def session_key(settings) -> bytes:
    """The signing key of session cookies (at least 32 bytes)."""
    if settings.session_key_file:
        path = Path(settings.session_key_file)
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise UserError(f"cannot read the session key file {path}: {exc.strerror or exc}") from None
    else:
        path = Path(settings.state_dir) / "console-session.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        key = path.read_bytes().strip()
    if len(key) < 32:
        raise UserError(f"the session key in {path} is shorter than 32 bytes: write a longer random one "
                        "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
    return key


def ensure_demo_user(settings, name: str = "demo") -> Path:
    """A local demo operator whose random password sits in ``<state dir>/console-demo.password`` (mode 0600).

    Made once; a later demo reuses it. Returns the password file (the password is never printed).
    """
    from sinks.auth_store import AuthError, AuthStore

    path = Path(settings.state_dir) / "console-demo.password"
    store = AuthStore(settings.postgres_dsn)
    if path.exists() and any(u["name"] == name and not u["disabled"] for u in store.list_users()):
        return path
    password = secrets.token_urlsafe(12)
    try:
        store.add_user(name, "operator", password)
    except AuthError:
        raise UserError(f"user {name!r} exists but its password file {path} is gone: "
                        f"vpp users disable {name}, or log in as another user") from None
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    store.audit("cli:demo", "users.add", target=name, address="local", outcome="ok", detail={"role": "operator"})
    return path


def wait_for_api(state_dir: str | os.PathLike[str], pid: int, timeout_s: float = 30.0) -> str | None:
    """The URL a `vpp serve` of process ``pid`` wrote to ``api.json``, once it did (None after ``timeout_s``)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            doc = json.loads((Path(state_dir) / API_FILE).read_text())
            if doc.get("pid") == pid:
                return doc["url"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    return None


def _cmd_serve(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from console.app import create_app
    from vpp.db import migrate

    settings = load_settings(args)
    migrate(settings.postgres_dsn)
    app = create_app(settings, session_key=session_key(settings), secure_cookies=args.secure_cookies)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))  # bound before api.json names it: a busy port fails here, file untouched
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    port = sock.getsockname()[1]
    url = f"http://{args.host if args.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}"
    api_file = Path(settings.state_dir) / API_FILE
    api_file.parent.mkdir(parents=True, exist_ok=True)
    api_file.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    print(f"vpp console and API at {url}/ (OpenAPI: {url}/openapi.json); Ctrl-C stops", flush=True)
    # uvicorn stops gracefully on SIGTERM, then raises it again with the handler it found: make that an exit
    # through the `finally` below (the default handler would end the process before api.json is removed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        config = uvicorn.Config(app, log_level=args.log_level, proxy_headers=args.proxy_headers,
                                forwarded_allow_ips=args.forwarded_allow_ips, timeout_graceful_shutdown=3)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        try:
            if json.loads(api_file.read_text()).get("pid") == os.getpid():
                api_file.unlink()
        except (OSError, ValueError):
            pass
    return 0


def add_commands(sub) -> None:
    p = command(sub, "serve", _cmd_serve, help="the operators' HTTP API and web console")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default a free one)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.add_argument("--secure-cookies", action="store_true", help="mark the session cookie Secure (behind HTTPS)")
    p.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-For from --forwarded-allow-ips")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxies whose X-Forwarded-For is trusted")
