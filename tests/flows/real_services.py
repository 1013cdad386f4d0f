"""Helpers the flow tests share for reading the real services back (imported from the tests' own folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

VPP = [sys.executable, "-m", "vpp.cli"]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def export_series(timeseries_url: str, metric: str, start_ms: int, end_ms: int) -> Iterator[tuple[dict, list, list]]:
    """(labels, timestamps ms, values) of every series of ``metric`` in the time range (VictoriaMetrics export API)."""
    query = urllib.parse.urlencode({"match[]": f'{{__name__="{metric}"}}', "start": start_ms // 1000 - 1,
                                    "end": end_ms // 1000 + 1})
    with urllib.request.urlopen(f"{timeseries_url}/api/v1/export?{query}", timeout=30) as resp:
        for line in resp:
            series = json.loads(line)
            yield series["metric"], series["timestamps"], series["values"]


def vpp_env(settings, **extra: str) -> dict[str, str]:
    """The environment of a ``vpp`` subprocess on ``settings`` (the test's own topics and database)."""
    return {**os.environ, "VPP_BROKER": settings.broker, "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
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

    def check_running(self) -> None:
        """Fail early, with the log's tail, when a process died."""
        dead = [" ".join(p.args[3:5]) for p in self.procs if p.poll() is not None]
        if dead:
            self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{dead} stopped early; log:\n{tail}")

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


def through_gateway(procs: VppProcesses, settings, tmp_path: Path, fleet) -> list[str]:
    """``fleet`` registered, a certificate per device, ``vpp gateway`` running: the simulator's options to use it.

    ``procs`` must have ``VPP_PKI_DIR`` in its environment (the CA and the gateway's certificate go there).
    """
    from vpp.simulator.kafka_io import register_fleet

    register_fleet(settings.postgres_dsn, fleet)
    state = ["--state-dir", str(tmp_path / "gateway-state")]
    procs.run("pki", "init", *state)
    procs.run("pki", "issue", "--all", "--out", str(tmp_path / "certs"), *state)
    procs.start("gateway", *state)
    url_file = tmp_path / "gateway-state" / "gateway.json"
    procs.wait_for(url_file.exists, 60, "the gateway to listen")
    return ["--via-gateway", json.loads(url_file.read_text())["url"], "--certs", str(tmp_path / "certs")]
