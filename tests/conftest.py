"""Shared fixtures: the REAL local stack (broker, PostgreSQL, time-series store, registry).

The stack lives in ``$VPP_TEST_STATE_DIR`` (default ``.vpp-test/`` at the repo
root). ``.ci/run`` starts it before pytest and stops it afterwards; when
pytest runs alone, the session starts it (harmless if it already runs) and
stops it at the end only if it was the one that started it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from vpp.config import DEFAULT_PARTITIONS, Settings
from vpp.kafka_security import client_config

# CI runs the same examples every time (a red CI is then a real, reproducible failure) and a loaded
# machine does not turn slow examples into deadline errors; tests that set their own settings keep them.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StackHandle:
    state_dir: Path
    settings: Settings

    @property
    def postgres_dsn(self) -> str:
        return self.settings.postgres_dsn

    @property
    def broker(self) -> str:
        return self.settings.broker

    @property
    def schema_registry_url(self) -> str:
        return self.settings.schema_registry_url

    @property
    def timeseries_url(self) -> str:
        return self.settings.timeseries_url


def pytest_collection_modifyitems(config, items) -> None:
    """A test that uses the real stack (directly or through another fixture) is an ``integration`` test:
    ``pytest -m "not integration"`` runs the pure ones without any service."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> StackHandle:
    from devtools.stack import Stack

    state_dir = Path(os.environ.get("VPP_TEST_STATE_DIR", REPO / ".vpp-test")).absolute()
    local = Stack(state_dir)
    already = local.status().healthy
    if not already:
        local.up(log=lambda *_: None)
    handle = StackHandle(state_dir=state_dir, settings=Settings.load(state_dir=state_dir, environ={}))
    yield handle
    if not already:
        local.down(log=lambda *_: None)


@pytest.fixture
def isolated_settings(stack: StackHandle) -> Settings:
    """Settings on the real stack with fresh uuid-prefixed topics (created) and a fresh database."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from confluent_kafka.admin import AdminClient, NewTopic

    from vpp.db import migrate

    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = AdminClient(client_config(stack.settings))
    futures = admin.create_topics([NewTopic(prefix + t, num_partitions=n, replication_factor=1) for t, n in DEFAULT_PARTITIONS.items()])
    for fut in futures.values():
        fut.result(timeout=15)
    dbname = "test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = make_conninfo(stack.postgres_dsn, dbname=dbname)
    migrate(dsn)
    yield stack.settings.replace(topic_prefix=prefix, postgres_dsn=dsn)
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
