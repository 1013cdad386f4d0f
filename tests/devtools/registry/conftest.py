"""Fixtures for the schema-registry tests: a fresh database and an in-process registry per test.

The PostgreSQL server comes from the project's session fixture ``stack``
(``stack.postgres_dsn``). To run these tests against another PostgreSQL
without the full stack, set ``REGDEV_DSN`` to a DSN whose role may create
databases; it then replaces ``stack`` for this directory.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from types import SimpleNamespace
from typing import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools.registry import RegistryServer

if os.environ.get("REGDEV_DSN"):

    @pytest.fixture(scope="session")
    def stack() -> SimpleNamespace:
        return SimpleNamespace(postgres_dsn=os.environ["REGDEV_DSN"])


@contextlib.contextmanager
def _fresh_database(server_dsn: str) -> Iterator[str]:
    """A new, empty database (uuid name) on the server of ``server_dsn``; yields its DSN, drops it after."""
    name = f"registry_test_{uuid.uuid4().hex}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def _running_registry(dsn: str) -> Iterator[str]:
    server = RegistryServer("127.0.0.1", 0, dsn).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_url(stack) -> Iterator[str]:
    """URL of a registry served in-process on a free port over a fresh database, shared by the session.

    Tests sharing it use their own subject names (``subject``) and leave the
    global compatibility level alone; those that change it use ``fresh_registry_url``.
    """
    with _fresh_database(stack.postgres_dsn) as dsn, _running_registry(dsn) as url:
        yield url


@pytest.fixture
def registry_database(stack) -> Iterator[str]:
    """DSN of a fresh, empty database for one test."""
    with _fresh_database(stack.postgres_dsn) as dsn:
        yield dsn


@pytest.fixture
def fresh_registry_url(registry_database: str) -> Iterator[str]:
    """URL of a registry of its own (fresh database) for one test."""
    with _running_registry(registry_database) as url:
        yield url


@pytest.fixture
def subject() -> str:
    """A subject name no other test uses."""
    return f"readings-{uuid.uuid4().hex[:12]}-value"
