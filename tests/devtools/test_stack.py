"""`vpp up / status / down`: real services, started twice harmlessly, failures reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

VPP = [sys.executable, "-m", "cli"]


def vpp(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(VPP + list(args), capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    """A stack of its own: these tests kill services."""
    state = tmp_path_factory.mktemp("stack")
    result = vpp("up", "--state-dir", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    yield state
    vpp("down", "--state-dir", str(state), "--purge")


def status(state) -> tuple[int, dict]:
    result = vpp("status", "--json", "--state-dir", str(state))
    return result.returncode, json.loads(result.stdout)


@pytest.mark.integration  # starts a stack of its own
def test_status_json_names_every_service_address(own_stack):
    code, doc = status(own_stack)
    assert code == 0
    assert doc["healthy"] is True
    assert doc["broker"].startswith("127.0.0.1:")
    assert doc["schema_registry"].startswith("http://127.0.0.1:")
    assert doc["postgres"].startswith("postgresql://postgres@127.0.0.1:")
    assert doc["timeseries"].startswith("http://127.0.0.1:")
    assert {s for s, v in doc["services"].items() if v["healthy"]} == {"broker", "schema_registry", "postgres", "timeseries"}


@pytest.mark.integration  # starts a stack of its own
def test_up_twice_is_harmless(own_stack):
    _, before = status(own_stack)
    again = vpp("up", "--state-dir", str(own_stack))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 4
    _, after = status(own_stack)
    assert {k: before[k] for k in ("broker", "postgres", "timeseries", "schema_registry")} == \
           {k: after[k] for k in ("broker", "postgres", "timeseries", "schema_registry")}
    assert {n: s["pid"] for n, s in before["services"].items()} == {n: s["pid"] for n, s in after["services"].items()}


@pytest.mark.integration  # starts a stack of its own
def test_a_killed_service_is_reported_and_up_restarts_it(own_stack):
    _, doc = status(own_stack)
    pid = doc["services"]["timeseries"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:  # wait until the kernel has reaped it, not a fixed time
        time.sleep(0.05)
    code, doc = status(own_stack)
    assert code == 1
    assert doc["healthy"] is False
    assert doc["services"]["timeseries"]["healthy"] is False
    assert doc["services"]["broker"]["healthy"] is True
    assert vpp("up", "--state-dir", str(own_stack)).returncode == 0
    code, doc = status(own_stack)
    assert code == 0 and doc["services"]["timeseries"]["healthy"] is True


@pytest.mark.integration  # starts a stack of its own
def test_topics_are_created_with_the_configured_partition_counts(own_stack):
    from confluent_kafka.admin import AdminClient

    from vpp.config import DEFAULT_PARTITIONS

    _, doc = status(own_stack)
    topics = AdminClient({"bootstrap.servers": doc["broker"]}).list_topics(timeout=10).topics
    for name, partitions in DEFAULT_PARTITIONS.items():
        assert len(topics[name].partitions) == partitions, name


def test_a_missing_binary_is_one_clear_line(tmp_path):
    result = vpp("up", "--state-dir", str(tmp_path), env={"VPP_PG_BIN": str(tmp_path / "nowhere")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "vpp: error: PostgreSQL 15 server not found: install it with: apt-get install postgresql-15"]


def test_status_of_a_stack_never_started(tmp_path):
    result = vpp("status", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "never started" in result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.integration  # starts a stack of its own
def test_security_is_on_out_of_the_box(own_stack):
    import httpx

    from vpp.config import SECRETS, Settings
    from vpp.serde import TOPIC_SCHEMAS

    settings = Settings.load(state_dir=own_stack, environ={})
    values = [getattr(settings, name) for name in SECRETS]
    assert all(len(v) >= 32 for v in values) and len(set(values)) == len(values)
    assert (own_stack / "secrets").stat().st_mode & 0o777 == 0o700
    # the registry's and the market's credentials, and PostgreSQL's passwords (a passfile: DSNs name it)
    assert {p.name: p.stat().st_mode & 0o777 for p in (own_stack / "secrets").iterdir()} == \
        dict.fromkeys((*SECRETS, "pgpass"), 0o600)
    _, doc = status(own_stack)
    shown = (own_stack / "stack.json").read_text() + json.dumps(doc) + repr(settings)
    shown += open(f"/proc/{doc['services']['schema_registry']['pid']}/cmdline", "rb").read().decode()
    assert not [v for v in values if v in shown], "a credential is shown"

    url = settings.schema_registry_url
    reader = (settings.schema_registry_user, settings.schema_registry_password)
    assert httpx.get(f"{url}/subjects", timeout=10).status_code == 401
    subjects = httpx.get(f"{url}/subjects", auth=reader, timeout=10).json()
    assert set(subjects) == {f"{topic}-value" for topic in TOPIC_SCHEMAS}  # `up` registered them
    assert httpx.put(f"{url}/config", json={"compatibility": "NONE"}, auth=reader, timeout=10).status_code == 403
