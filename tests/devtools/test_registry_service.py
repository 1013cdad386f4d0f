"""The deployed schema registry's readiness: ready only while its database answers, and no secret shown."""

from __future__ import annotations

import httpx
from psycopg.conninfo import make_conninfo

from devtools.registry_service import ReadinessServer


def test_ready_while_the_database_answers_and_not_when_it_refuses(stack) -> None:
    good = ReadinessServer("127.0.0.1", 0, stack.postgres_dsn).start()
    bad = ReadinessServer("127.0.0.1", 0, make_conninfo(stack.postgres_dsn, password="n0t-the-password",
                                                          passfile="/nonexistent")).start()
    try:
        ok = httpx.get(f"http://127.0.0.1:{good.port}/ready", timeout=10)
        refused = httpx.get(f"http://127.0.0.1:{bad.port}/ready", timeout=10)
        elsewhere = httpx.get(f"http://127.0.0.1:{good.port}/subjects", timeout=10)
    finally:
        good.stop()
        bad.stop()
    assert (ok.status_code, ok.json()["ready"]) == (200, True)
    assert (refused.status_code, refused.json()["ready"]) == (503, False)
    assert "password authentication failed" in refused.json()["detail"]
    assert "n0t-the-password" not in refused.text
    assert elsewhere.status_code == 404
