"""Benchmark of the device gateway: connections, memory, readings/s into Kafka, ack latency, reconnect storm.

    python bench/gateway.py [--devices 1000] [--seconds 15] [--readings-per-frame 50] [--compression deflate|none]
                            [--max-frames-per-s 200] [--reconnect-only] [--state-dir .vpp]

Needs the local stack (``vpp up``). Makes a fresh database and uuid-prefixed topics, a PKI in a
temporary directory, registers and certifies ``--devices`` devices (timed: ``vpp pki issue --all``'s
code path), runs ``vpp gateway`` as a subprocess and the devices in ANOTHER process (asyncio,
websockets' client, one mutual-TLS socket each). Phases:

1. connect every device: handshakes/s, and the gateway's RSS growth per connection;
2. throughput: every device sends frames of ``--readings-per-frame`` within its window for
   ``--seconds``; readings acked per second (acks=all, idempotent), against the BASELINE of the
   same run: the same envelopes produced to the same broker by a plain confluent-kafka loop with
   the same producer settings (``sinks.kafka.producer_config``); with the cores each process used
   and the cores' worth of time its threads waited for a CPU (the machine is shared), and the
   ratio by CPU time a reading (the gateway process's against the loop's: the steady figure where
   the wall-clock ratio also measures how a busy machine dealt out its cores);
3. live rate: one reading per device every 5 s (the fleet's rate) for ``--seconds``: ack latency
   p50/p99 (device send to ack received);
4. restart (a reconnect storm): the gateway is stopped (SIGTERM) and started again; every device
   reconnects with jittered exponential backoff from 0.5 s and sends one reading first: time until
   all are connected, until all are acked, the attempts that got no ack by cause, the gateway's RSS.

``--reconnect-only`` runs phases 1 and 4. ``BENCH_PROFILE=PATH`` runs the gateway under cProfile timed
by its loop thread's CPU time (``PATH.<time>``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
from vpp.kafka_security import client_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _gateway_devices import devices_main, envelope  # noqa: E402 - the devices' process, beside this file


# -- the orchestrator -----------------------------------------------------------------------------------
#: the gateway under cProfile with the loop thread's CPU time as its clock: on a shared machine the wall clock
#: also counts the time a runnable process waited for a core, which no line of its code spent
_PROFILED = """import cProfile, sys, time
from cli.main import main
profiler = cProfile.Profile(time.thread_time)
try:
    profiler.runcall(main, ["gateway", *sys.argv[1:]])
finally:
    profiler.dump_stats({out!r})
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of every thread of a process so far."""
    on, waiting = 0, 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ran, waited, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        on, waiting = on + int(ran), waiting + int(waited)
    return on / 1e9, waiting / 1e9


class _Cpu:
    """Cores used by each named process between ``start()`` and ``shares()``, and cores' worth of time its
    threads were runnable but waited for a CPU (the machine is shared: where the two cores went)."""

    def __init__(self, **pids: int):
        self.pids = pids

    def start(self) -> None:
        self.wall, self.used = time.perf_counter(), {k: _cpu_s(p) for k, p in self.pids.items()}

    def shares(self) -> str:
        wall = time.perf_counter() - self.wall
        out = []
        self.cores = {}
        for k, p in self.pids.items():
            (on, waited), (on0, waited0) = _cpu_s(p), self.used[k]
            self.cores[k] = (on - on0) / wall
            out.append(f"{k} {self.cores[k]:.2f} (waited {(waited - waited0) / wall:.2f})")
        return ", ".join(out)


def _baseline(settings, device_ids: list[str], per_frame: int, seconds: float) -> float:
    from confluent_kafka import Producer

    from sinks.kafka import producer_config

    producer = Producer(producer_config(settings))
    topic = settings.topic("telemetry.raw")
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for d in device_ids:
            for i in range(per_frame):
                while True:
                    try:
                        producer.produce(topic, orjson.dumps(envelope(d, n + i)), d)
                        break
                    except BufferError:
                        producer.poll(0.05)
            n += per_frame
        producer.poll(0)
    producer.flush(60)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--readings-per-frame", type=int, default=50)
    parser.add_argument("--reconnect-only", action="store_true", help="only connect, restart the gateway, reconnect")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="what the devices offer (websockets' permessage-deflate by default, as the simulator)")
    parser.add_argument("--max-frames-per-s", type=float, default=200.0,
                        help="the gateway's frames per second a device (setting gateway_max_frames_per_s, 20 in "
                             "production): the flood's few devices stand for a larger fleet, and at 20 the limit capped "
                             "the gateway at devices x 20 x readings a frame (200,000 readings/s with 200 devices)")
    parser.add_argument("--state-dir", default=os.environ.get("VPP_STATE_DIR", ".vpp"))
    args = parser.parse_args()

    import psycopg
    from psycopg.conninfo import make_conninfo
    from confluent_kafka.admin import AdminClient, NewTopic
    from psycopg import sql

    from edge import pki
    from sinks.certificates import insert_certificates
    from sinks.asset_registry import upsert_assets
    from vpp.assets import Asset
    from vpp.config import DEFAULT_PARTITIONS, Settings
    from vpp.db import migrate
    from devtools.stack import free_ports

    base = Settings.load(state_dir=args.state_dir)
    prefix, dbname = f"bench{uuid.uuid4().hex[:8]}.", f"bench_{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(base))
    for fut in admin.create_topics([NewTopic(prefix + t, num_partitions=n, replication_factor=1)
                                    for t, n in DEFAULT_PARTITIONS.items()]).values():
        fut.result(15)
    from vpp.serde import register_schemas, registry_client

    register_schemas(registry_client(base.schema_registry_url, base.schema_registry_admin_user,
                                     base.schema_registry_admin_password), prefix)  # flows and services only look up
    with psycopg.connect(base.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = make_conninfo(base.postgres_dsn, dbname=dbname)
    tmp = Path(tempfile.mkdtemp(prefix="vpp-bench-gateway-"))
    port = free_ports(1)[0]
    settings = base.replace(topic_prefix=prefix, postgres_dsn=dsn, pki_dir=str(tmp / "pki"), state_dir=str(tmp / "state"),
                            gateway_port=port)
    gateway = None
    try:
        migrate(dsn)
        device_ids = [f"bench-{i:06d}" for i in range(args.devices)]
        upsert_assets(dsn, [Asset(d, f"s-{d}", f"us/ca/s-{d}", "UTC", 13500, 5000, 5000, 20) for d in device_ids])
        now = datetime.now(timezone.utc)
        ca_key, ca_cert = pki.make_ca(now)  # the gateway needs the CA certificate only
        pki.write_secret(Path(settings.pki_dir) / "ca.pem", pki.cert_pem(ca_cert))
        skey, scert = pki.make_server_cert(ca_key, ca_cert, now)
        pki.write_secret(Path(settings.pki_dir) / "server.pem", pki.cert_pem(scert))
        pki.write_secret(Path(settings.pki_dir) / "server.key", pki.key_pem(skey))
        started = time.perf_counter()
        issued = [pki.make_device_cert(ca_key, ca_cert, d, now) for d in device_ids]
        with psycopg.connect(dsn) as conn:
            insert_certificates(conn, [i.row() for i in issued])
        for one in issued:
            out = tmp / "certs" / one.device_id
            pki.write_secret(out / "device.key", pki.key_pem(one.key))
            pki.write_secret(out / "device.pem", pki.cert_pem(one.cert))
            pki.write_secret(out / "ca.pem", pki.cert_pem(ca_cert))
        issue_s = time.perf_counter() - started
        print(f"issued {len(issued)} device certificates in {issue_s:.2f} s ({len(issued) / issue_s:,.0f}/s)")

        env = {**os.environ, "PYTHONPATH": str(REPO), "VPP_TOPIC_PREFIX": prefix, "VPP_POSTGRES_DSN": dsn,
               "VPP_PKI_DIR": settings.pki_dir, "VPP_GATEWAY_PORT": str(port), "VPP_BROKER": settings.broker,
               "VPP_GATEWAY_MAX_FRAMES_PER_S": str(args.max_frames_per_s),
               "VPP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
               # the registry's read-only identity (environment, never the command line)
               "VPP_SCHEMA_REGISTRY_PASSWORD": settings.schema_registry_password}
        log = open(tmp / "gateway.log", "ab")

        def start_gateway() -> subprocess.Popen:
            command = ["-m", "cli", "gateway", "--state-dir", settings.state_dir]
            if os.environ.get("BENCH_PROFILE"):  # cProfile timed by the loop thread's CPU time, not the wall clock
                command = ["-c", _PROFILED.format(out=f"{os.environ['BENCH_PROFILE']}.{time.time():.0f}"), *command[3:]]
            proc = subprocess.Popen([sys.executable, *command],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            state = Path(settings.state_dir) / "gateway.json"
            while not (state.exists() and json.loads(state.read_text()).get("pid") == proc.pid):
                if proc.poll() is not None:
                    raise SystemExit(f"the gateway stopped: see {tmp / 'gateway.log'}")
                time.sleep(0.05)
            return proc

        gateway = start_gateway()
        rss_idle = _rss_kib(gateway.pid)
        url = f"wss://127.0.0.1:{port}/v1/device"
        ours, theirs = mp.get_context("spawn").Pipe()
        clients = mp.get_context("spawn").Process(target=devices_main, args=(theirs, device_ids, str(tmp / "certs"), url,
                                                                              settings.gateway_window,
                                                                              None if args.compression == "none" else args.compression))
        clients.start()
        ours.send(("connected", None))
        connect_s = ours.recv()
        time.sleep(2)
        rss_connected = _rss_kib(gateway.pid)
        per_conn = (rss_connected - rss_idle) / args.devices
        print(f"{args.devices} devices connected in {connect_s:.1f} s ({args.devices / connect_s:,.0f} handshakes/s); "
              f"gateway RSS {rss_idle / 1024:.0f} -> {rss_connected / 1024:.0f} MiB: {per_conn:.1f} KiB per connection")

        if not args.reconnect_only:
            broker_pid = json.loads((Path(args.state_dir) / "stack.json").read_text())["pids"]["broker"]
            flood_cpu = _Cpu(gateway=gateway.pid, devices=clients.pid, broker=broker_pid)
            flood_cpu.start()
            ours.send(("flood", (args.seconds, args.readings_per_frame)))
            gateway_rate, refused, flood_rtt_s = ours.recv()
            flood_cores = flood_cpu.shares()
            rss_flood = _rss_kib(gateway.pid)
            ours.recv()  # drained
            baseline_cpu = _Cpu(producer_loop=os.getpid(), broker=broker_pid)
            baseline_cpu.start()
            baseline_rate = _baseline(settings, device_ids, args.readings_per_frame, args.seconds)
            baseline_cores = baseline_cpu.shares()
            print(f"readings/s into Kafka (acks=all): gateway {gateway_rate:,.0f}, plain producer loop {baseline_rate:,.0f}: "
                  f"ratio {gateway_rate / baseline_rate:.2f} (gateway RSS under load {rss_flood / 1024:.0f} MiB; "
                  f"{refused} frames refused, e.g. beyond {args.max_frames_per_s:g} frames/s a device; "
                  f"a frame's send to its ack p50 {flood_rtt_s * 1000:.0f} ms)")
            print(f"cores used: through the gateway {flood_cores}; plain loop {baseline_cores}; "
                  f"load average {os.getloadavg()[0]:.1f}")
            # the wall-clock ratio above also measures how the shared cores were dealt out (the devices' process
            # competes with the gateway, not with the loop); CPU time a reading is what the gateway can change
            gateway_us = 1e6 * flood_cpu.cores["gateway"] / gateway_rate
            loop_us = 1e6 * baseline_cpu.cores["producer_loop"] / baseline_rate
            print(f"CPU a reading (all threads of the process): gateway {gateway_us:.2f} us, plain loop {loop_us:.2f} us: "
                  f"ratio by CPU {loop_us / gateway_us:.2f}")

            ours.send(("live", args.seconds))
            latencies = ours.recv()
            if latencies:
                p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                print(f"ack latency at the live rate (1 reading / device / 5 s, {len(latencies)} frames): "
                      f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        ours.send(("arm", None))
        ours.recv()
        rss_before = _rss_kib(gateway.pid)
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)
        restarted = time.monotonic()
        gateway = start_gateway()
        ours.send(("storm", restarted))
        connected_s, acked_s, attempts, failures = ours.recv()
        print(f"gateway restart: all {args.devices} devices connected again {connected_s:.1f} s and each acked "
              f"{acked_s:.1f} s after it was started again (jittered backoff from 0.5 s doubling to 8 s); "
              f"{attempts} connection attempts, without an ack: {failures or 'none'}; gateway RSS "
              f"{rss_before / 1024:.0f} MiB before, {_rss_kib(gateway.pid) / 1024:.0f} MiB after; "
              f"load average {os.getloadavg()[0]:.1f}")
        ours.send(("exit", None))
        ours.recv()
        clients.join(30)
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)
        with psycopg.connect(base.postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.delete_topics([prefix + t for t in DEFAULT_PARTITIONS])


if __name__ == "__main__":
    main()
