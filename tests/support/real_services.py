"""Helpers the flow tests share for reading the real services back (imported from the tests' own folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import httpx

VPP = [sys.executable, "-m", "cli"]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def export_series(timeseries_url: str, metric: str, start_ms: int, end_ms: int) -> Iterator[tuple[dict, list, list]]:
    """(labels, timestamps ms, values) of every series of ``metric`` in the time range (VictoriaMetrics export API)."""
    query = {"match[]": f'{{__name__="{metric}"}}', "start": start_ms // 1000 - 1, "end": end_ms // 1000 + 1}
    response = httpx.get(f"{timeseries_url}/api/v1/export", params=query, timeout=30).raise_for_status()
    for line in response.text.splitlines():
        if line.strip():
            series = json.loads(line)
            yield series["metric"], series["timestamps"], series["values"]


def vpp_env(settings, **extra: str) -> dict[str, str]:
    """The environment of a ``vpp`` subprocess on ``settings`` (the test's own topics and database)."""
    from vpp.config import SECRETS

    # the stack's credentials: stack.json names their files; a test with a state dir of its own gets them
    # through the environment (never on a command line)
    secrets = {f"VPP_{name.upper()}": getattr(settings, name) for name in SECRETS if getattr(settings, name)}
    return {**os.environ, "VPP_BROKER": settings.broker, "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
            "VPP_STATE_DIR": settings.state_dir, **secrets,
            "VPP_POSTGRES_DSN": settings.postgres_dsn, "VPP_TIMESERIES_URL": settings.timeseries_url,
            "VPP_TOPIC_PREFIX": settings.topic_prefix, **extra}


class VppProcesses:
    """``vpp`` subprocesses of one test (simulator, flows), their output in one log; all stopped on exit."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path, self.procs = env, log_path, []
        self._log = open(log_path, "ab")

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen:
        proc = subprocess.Popen(VPP + list(args), env={**self.env, **extra_env}, stdout=self._log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """Run a ``vpp`` command to its end (e.g. ``dispatch send``); fails with its output if it fails."""
        done = subprocess.run(VPP + list(args), env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"vpp {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return done

    def dump(self, topic: str, into: Path) -> Path:
        """``vpp dump TOPIC`` into ``into/TOPIC.dump.jsonl`` (the test's prefixed topic); returns the path."""
        path = into / f"{topic}.dump.jsonl"
        self.run("dump", topic, "--out", str(path))
        return path

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters the processes wrote."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_running(self) -> None:
        """Fail early, with the log's tail, when a process died."""
        dead = [" ".join(p.args[3:5]) for p in self.procs if p.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} stopped early; log:\n{self.log_tail()}")

    def wait_for(self, predicate: Callable[[], object], timeout_s: float, what: str, *,
                 poll: Callable[[], object] | None = None) -> None:
        """``wait_for`` that first calls ``poll`` (e.g. a topic reader) and fails early when a process died."""
        def check() -> object:
            self.check_running()
            if poll is not None:
                poll()
            return predicate()

        wait_for(check, timeout_s, what)

    def __enter__(self) -> "VppProcesses":
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._log.close()


@contextmanager
def isolated(stack_settings) -> Iterator:
    """Settings on the real stack with fresh uuid-prefixed topics (created, their schemas registered as the
    registry's read-write identity: flows only look schemas up) and a fresh, migrated database (dropped after)."""
    import uuid

    import psycopg
    from confluent_kafka.admin import AdminClient, NewTopic
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from vpp.config import DEFAULT_PARTITIONS
    from vpp.kafka_security import client_config
    from vpp.db import migrate
    from vpp.serde import register_schemas, registry_client

    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = AdminClient(client_config(stack_settings))
    futures = admin.create_topics([NewTopic(prefix + t, num_partitions=n, replication_factor=1)
                                   for t, n in DEFAULT_PARTITIONS.items()])
    for fut in futures.values():
        fut.result(timeout=15)
    register_schemas(registry_client(stack_settings.schema_registry_url, stack_settings.schema_registry_admin_user,
                                     stack_settings.schema_registry_admin_password), prefix)
    dbname = "test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(stack_settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = make_conninfo(stack_settings.postgres_dsn, dbname=dbname)
    migrate(dsn)
    try:
        yield stack_settings.replace(topic_prefix=prefix, postgres_dsn=dsn)
    finally:
        with psycopg.connect(stack_settings.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def through_gateway(procs: VppProcesses, settings, tmp_path: Path, fleet) -> list[str]:
    """``fleet`` registered, a certificate per device, ``vpp gateway`` running: the simulator's options to use it.

    ``procs`` must have ``VPP_PKI_DIR`` in its environment (the CA and the gateway's certificate go there).
    """
    from devtools.simulator.kafka_io import register_fleet

    register_fleet(settings.postgres_dsn, fleet)
    state = ["--state-dir", str(tmp_path / "gateway-state")]
    procs.run("pki", "init", *state)
    procs.run("pki", "issue", "--all", "--out", str(tmp_path / "certs"), *state)
    procs.start("gateway", *state)
    url_file = tmp_path / "gateway-state" / "gateway.json"
    procs.wait_for(url_file.exists, 60, "the gateway to listen")
    return ["--via-gateway", json.loads(url_file.read_text())["url"], "--certs", str(tmp_path / "certs")]
