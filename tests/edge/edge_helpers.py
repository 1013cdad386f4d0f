"""Helpers of the device edge tests: a PKI in a temporary directory, registered devices, a running gateway.

The gateway runs on its own event loop in a thread (the tests use websockets' synchronous client
over real TLS sockets on 127.0.0.1), against the real broker and PostgreSQL of the test stack,
on the test's own topics and database (``isolated_settings``).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from edge import pki
from sinks.certificates import insert_certificates
from sinks.asset_registry import upsert_assets
from vpp.assets import Asset
from vpp.kafka_security import client_config

DEVICES = ("pw-1", "pw-2")


def register(dsn: str, *device_ids: str) -> None:
    upsert_assets(dsn, [Asset(d, f"site-{d}", f"us/ca/site-{d}", "America/Los_Angeles", 13500, 5000, 5000, 20)
                        for d in device_ids])


class Pki:
    """The platform CA of one test, and certificates written as ``vpp pki issue`` writes them."""

    def __init__(self, settings, root: Path):
        self.settings, self.root = settings, root
        self.paths = pki.PkiPaths.of(settings)
        self.ca_key, self.ca_cert = pki.make_ca(datetime.now(timezone.utc))
        pki.write_secret(self.paths.ca_key, pki.key_pem(self.ca_key))
        pki.write_secret(self.paths.ca_cert, pki.cert_pem(self.ca_cert))
        key, cert = pki.make_server_cert(self.ca_key, self.ca_cert, datetime.now(timezone.utc))
        pki.write_secret(self.paths.server_key, pki.key_pem(key))
        pki.write_secret(self.paths.server_cert, pki.cert_pem(cert))
        self._n = 0

    def issue(self, device_id: str, *, now: datetime | None = None, days: int = 365, record: bool = True,
              ca: tuple | None = None) -> Path:
        """A device certificate in a new directory (recorded in the table unless ``record`` is False)."""
        ca_key, ca_cert = ca or (self.ca_key, self.ca_cert)
        issued = pki.make_device_cert(ca_key, ca_cert, device_id, now or datetime.now(timezone.utc), days=days)
        if record:
            with psycopg.connect(self.settings.postgres_dsn) as conn:
                insert_certificates(conn, [issued.row()])
        self._n += 1
        out = self.root / f"{device_id}-{self._n}"
        pki.write_secret(out / "device.key", pki.key_pem(issued.key))
        pki.write_secret(out / "device.pem", pki.cert_pem(issued.cert))
        pki.write_secret(out / "ca.pem", pki.cert_pem(self.ca_cert))
        (out / "serial").write_text(issued.serial)
        return out


def client_context(cert_dir: Path | None, ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert_dir is not None:
        ctx.load_cert_chain(cert_dir / "device.pem", cert_dir / "device.key")
    return ctx


class RunningGateway:
    def __init__(self, settings, *, wait_ready: bool = True):
        from edge.gateway import Gateway

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway = Gateway(settings, name="gateway-test")
        self.url = self.call(self.gateway.start())
        if wait_ready:
            self.call(self.gateway.wait_ready())

    def call(self, coro, timeout_s: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def read_topic(settings, topic: str, want: int, timeout_s: float = 30.0) -> list:
    """At least ``want`` messages of a (prefixed) topic from its start, or all there are once the time is up."""
    from confluent_kafka import Consumer, TopicPartition

    name = settings.topic(topic)
    consumer = Consumer({**client_config(settings), "group.id": "edge-test", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic=name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        out, deadline = [], time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            out += [m for m in consumer.consume(num_messages=1000, timeout=0.2) if m.error() is None]
        return out
    finally:
        consumer.close()


def ago(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)
