"""Fixtures of the device edge tests (helpers in ``edge_helpers``)."""

from __future__ import annotations

import pytest
from edge_helpers import DEVICES, Pki, RunningGateway, register


@pytest.fixture
def edge_settings(isolated_settings, tmp_path):
    settings = isolated_settings.replace(pki_dir=str(tmp_path / "pki"), state_dir=str(tmp_path / "state"),
                                         gateway_refresh_s=0.5)
    register(settings.postgres_dsn, *DEVICES)
    return settings


@pytest.fixture
def platform_pki(edge_settings, tmp_path) -> Pki:
    return Pki(edge_settings, tmp_path / "devices")


@pytest.fixture
def gateway(edge_settings, platform_pki):
    running = RunningGateway(edge_settings)
    yield running
    running.stop()


