"""Shared fixtures: the REAL local stack (broker, PostgreSQL, time-series store, registry).

The stack lives in ``$VPP_TEST_STATE_DIR`` (default ``.vpp-test/`` at the repo
root). ``.ci/run`` starts it before pytest and stops it afterwards; when
pytest runs alone, the session starts it (harmless if it already runs) and
stops it at the end only if it was the one that started it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from vpp.config import Settings

# No deadlines: a loaded machine must not turn slow examples into failures (speed lives in bench/). CI runs
# the same examples every time (a red CI is then a real, reproducible failure). Tests that set their own
# settings keep them.
hypothesis_settings.register_profile("vpp", deadline=None)
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "vpp")

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

    def registry_client(self, *, admin: bool = False):
        """A schema registry client as the read-only identity (``admin``: the read-write one)."""
        from vpp.serde import registry_client

        s = self.settings
        if admin:
            return registry_client(s.schema_registry_url, s.schema_registry_admin_user, s.schema_registry_admin_password)
        return registry_client(s.schema_registry_url, s.schema_registry_user, s.schema_registry_password)


def pytest_collection_modifyitems(config, items) -> None:
    """A test that uses the real stack (directly or through another fixture) is an ``integration`` test:
    ``pytest -m "not integration"`` runs the pure ones without any service."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> StackHandle:
    from devtools.stack import Stack

    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist's worker processes would each start and stop it
        pytest.fail('the integration tests share one local stack per session: run them without -n (-n 2 is for the '
                    'pure tests: pytest -m "not integration" -n 2)', pytrace=False)
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
    """Settings on the real stack with fresh uuid-prefixed topics (created, their schemas registered as the
    registry's read-write identity: flows only look schemas up) and a fresh database."""
    from real_services import isolated

    with isolated(stack.settings) as settings:
        yield settings
