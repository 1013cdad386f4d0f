"""The operators' API and console on the real stack: a server in a thread on a free loopback port, over the
test's own database and topics, with three users (viewer, operator, admin) and a small seeded fleet."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import timedelta

import pytest

from console.auth import RateLimit
from console_fixtures import PASSWORD, ROLES, Console, seed_fleet
from real_services import isolated


def _serve(app) -> tuple[str, object, threading.Thread]:
    import uvicorn

    from vpp.net import free_ports

    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the console server did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="module")
def console_server(stack):
    """One server per test module on a fresh database and fresh topics (like ``isolated_settings``)."""

    from console.app import create_app
    from console.auth import new_token
    from sinks.auth_store import AuthStore

    isolation = isolated(stack.settings)
    settings = isolation.__enter__().replace(market_url="http://127.0.0.1:9")
    dsn = settings.postgres_dsn
    store = AuthStore(dsn)
    tokens = {}
    for role in ROLES:
        store.add_user(role, role, PASSWORD)
        token, digest = new_token()
        store.create_token(role, digest, expires_in=timedelta(days=1))
        tokens[role] = token
    root = "t" + uuid.uuid4().hex[:8]
    seed_fleet(settings, root)
    app = create_app(settings, session_key=secrets.token_bytes(32), stream_poll_s=0.3, keepalive_s=1.0,
                     rate_limit=RateLimit(per_user=5, per_address=50))
    url, server, thread = _serve(app)
    yield Console(url, settings, app, root, tokens)
    server.should_exit = True
    thread.join(timeout=10)
    isolation.__exit__(None, None, None)
