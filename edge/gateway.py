"""The device gateway: WebSocket over mutual TLS at ``/v1/device``, telemetry into Kafka, set points back out.

- TLS 1.2+ with a REQUIRED client certificate chained to the platform CA (one ``SSLContext``
  built at start; OpenSSL refuses no certificate, another CA's and an expired one during the TLS
  handshake, before any HTTP, and ``edge.tls`` counts those by reason too). The identity is the
  certificate's SAN URI ``urn:vpp:device:<id>``.
- Before the upgrade (``process_request``) the certificate is checked against the certificate
  table and the asset registry (``edge.registry``): revoked, superseded, unknown certificate,
  unregistered device -> HTTP 403 with the reason, logged and counted
  (``vpp.gateway.handshakes.refused{reason}``). The first use of a certificate supersedes the
  device's older active ones. While the cache is loading the session is accepted and closed with
  1013 (try again later).
- A device holds one session: a newer one closes the older (4000 "replaced"). Each session is a row
  of ``gateway_sessions`` and a ``device_connected`` / ``device_disconnected`` event on ``fleet.events``.
- Telemetry: each envelope of a frame goes to ``telemetry.raw`` (key device_id) with the
  idempotent producer; the ``ack`` goes out after every delivery of the frame succeeded. At most
  ``gateway_window`` frames of a device are unacknowledged: beyond, its socket is not read; while
  the producer's queue is full no socket is read. ``max_queue`` of websockets is kept above the
  window so that a device keeping to its window never has its pongs stuck behind unread data.
- Limits: frame size, readings per frame, frames per second -> an ``error``; a device
  that keeps violating them (``Strikes``) is closed with 1008.
- Revocation: the registry refresh (every ``gateway_refresh_s``) closes live sessions whose
  certificate is no longer active with 1008.
- Set points: every ``device.commands`` record is sent to its device if this process holds it
  (each gateway process reads all of the topic and drops the rest); a device that connects first
  gets the set point it must follow now.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from opentelemetry import metrics
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from edge import protocol
from edge.kafka_io import CommandFollower, DeliveryProducer
from edge.pki import PkiError, PkiPaths, device_id_of, fingerprint_sha256, serial_hex
from edge.registry import EdgeRegistry
from edge.tls import server_ssl_context, small_tls_read_buffers
from vpp.dead_letters import dead_letter_record
from vpp.events import event_record
from sinks.messages import OutMessage

__all__ = ["Gateway", "PATH", "STATE_FILE"]

_log = logging.getLogger(__name__)
PATH = "/v1/device"
STATE_FILE = "gateway.json"
CLOSE_TRY_LATER, CLOSE_POLICY, CLOSE_REPLACED = 1013, 1008, 4000
_TELEMETRY = (("type", "telemetry"),)


class _Metrics:
    """The gateway's instruments. Frames are counted in a plain ``Counter`` by their attributes and reported by an
    observable counter when the metrics are collected: one dict increment a frame instead of the SDK's ``add``
    (~3 us: attributes cleaned, measurement object, exemplar filter, lock)."""

    def __init__(self) -> None:
        meter = metrics.get_meter("vpp.gateway")
        self.frame_counts: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.connections = meter.create_up_down_counter("vpp.gateway.connections", description="open device sessions")
        self.refused = meter.create_counter("vpp.gateway.handshakes.refused", description="handshakes refused, by reason")
        meter.create_observable_counter("vpp.gateway.frames", [self._observe_frames],
                                        description="frames from devices, by type and outcome")
        self.ack_ms = meter.create_histogram("vpp.gateway.ack.latency", unit="ms", description="frame received to ack sent")
        self.paused = meter.create_up_down_counter("vpp.gateway.sockets.paused", description="sockets not read (window full)")

    def _observe_frames(self, _options) -> list[metrics.Observation]:
        return [metrics.Observation(n, dict(attributes)) for attributes, n in list(self.frame_counts.items())]


@dataclass(eq=False)
class _Session:
    ws: ServerConnection
    device_id: str
    serial: str
    window: int
    bucket: protocol.TokenBucket
    strikes: protocol.Strikes = field(default_factory=protocol.Strikes)
    unacked: int = 0
    session_id: int | None = None
    readable: asyncio.Event = field(default_factory=asyncio.Event)
    key: bytes = b""  # the Kafka key of its readings: device_id, encoded once

    def __post_init__(self) -> None:
        self.key = self.device_id.encode()

    def send(self, frame: dict[str, Any]) -> None:
        """Writes ``frame`` to the device now, in call order (acks, errors, commands), framed by websockets' protocol
        object into the transport's buffer; nothing waits for the device to read (no task, no queue of our own).
        What can pile up there while a device does not read is small: a device that keeps to its window reads its
        acks to send more, an error per refused frame until the strikes close it, a set point per dispatch
        interval; and a device that reads nothing misses its pongs, so the keep-alive closes it (the old writer
        task's queue grew the same way while its send waited)."""
        ws = self.ws
        if ws.protocol.state is State.OPEN:
            ws.protocol.send_text(orjson.dumps(frame))
            try:
                ws.send_data()
            except Exception:  # noqa: BLE001 - as websockets does: a transport that cannot write ends the session
                _log.debug("could not write to %s", self.device_id, exc_info=True)
                ws.transport.abort()


class Gateway:
    """``await Gateway(settings).start()``, then ``url``; ``await stop()`` closes sessions, flushes, and forgets the URL."""

    def __init__(self, settings, *, name: str | None = None):
        from vpp.serde import Serde

        self.settings = settings
        self.name = name or f"gateway-{os.getpid()}"
        self.paths = PkiPaths.of(settings)
        self.registry = EdgeRegistry(settings.postgres_dsn, refresh_s=settings.gateway_refresh_s, gateway=self.name)
        self.serde = Serde.from_settings(settings)
        self.topics = {t: settings.topic(t) for t in ("telemetry.raw", "telemetry.dlq", "device.commands", "device.command_acks",
                                                      "fleet.events")}
        self.sessions: dict[str, _Session] = {}
        self.latest_setpoints: dict[str, dict[str, Any]] = {}
        self._admitted: dict[Any, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._metrics = _Metrics()
        self.refused: Counter[str] = Counter()  # handshakes refused by reason, as the metric counts them
        self.url = ""

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        small_tls_read_buffers()
        ctx = server_ssl_context(self.paths, on_refused=self._count_refusal)
        for topic in ("telemetry.dlq", "device.command_acks", "device.commands", "fleet.events"):  # their schemas first
            await asyncio.to_thread(self.serde.schema_id, self.topics[topic])
        self.producer = DeliveryProducer(self.settings, loop, self.topics["telemetry.raw"])
        self.commands = await asyncio.to_thread(CommandFollower, self.settings, self.topics["device.commands"],
                                                self.serde.decode, loop, self._on_command)
        self._spawn(self.registry.run(self._on_certificates_changed))
        s = self.settings
        self._server = await serve(
            self._handle, s.gateway_host, s.gateway_port, ssl=ctx, process_request=self._process_request,
            max_size=4 * s.gateway_max_frame_bytes, max_queue=max(16, 2 * s.gateway_window),
            ping_interval=s.gateway_ping_s, ping_timeout=s.gateway_ping_s, server_header=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"wss://{'127.0.0.1' if s.gateway_host in ('0.0.0.0', '') else s.gateway_host}:{port}{PATH}"
        self._write_state()
        _log.info("gateway %s listening on %s", self.name, self.url)
        return self.url

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.registry.ready:
            if time.monotonic() > deadline:
                raise TimeoutError("the certificate and asset cache did not load")
            await asyncio.sleep(0.05)

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.to_thread(self.commands.close)
        await self.producer.close()
        await self.registry.close()
        state = Path(self.settings.state_dir) / STATE_FILE
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass

    def _write_state(self) -> None:
        state = Path(self.settings.state_dir) / STATE_FILE
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid(), "name": self.name}))
        tmp.replace(state)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- handshake ----------------------------------------------------------------------------
    def _count_refusal(self, reason: str, detail: str) -> None:
        """A refused handshake, at the TLS level (edge.tls) or before the upgrade: counted by reason and logged."""
        self.refused[reason] += 1
        self._metrics.refused.add(1, {"reason": reason})
        _log.warning("refused: %s %s", reason, detail)

    def _refuse(self, connection: ServerConnection, reason: str, detail: str = ""):
        self._count_refusal(reason, f"{connection.remote_address} {detail}")
        return connection.respond(HTTPStatus.FORBIDDEN, f"refused: {reason}\n")

    async def _process_request(self, connection: ServerConnection, request):
        if request.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"the device endpoint is {PATH}\n")
        der = connection.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not der:
            return self._refuse(connection, "no_certificate")
        cert = x509.load_der_x509_certificate(der)
        try:
            device_id = device_id_of(cert)
        except PkiError as exc:
            return self._refuse(connection, "no_device_identity", str(exc))
        if not self.registry.ready:
            return None  # upgraded, then closed with 1013 by the handler
        serial = serial_hex(cert)
        row = await self.registry.lookup(serial)
        registered = await self.registry.is_registered(device_id)
        reason = protocol.refusal(row, device_id, fingerprint_sha256(cert), registered, datetime.now(timezone.utc))
        if reason is not None:
            return self._refuse(connection, reason, f"device {device_id} serial {serial}")
        for old in await self.registry.supersede_older(device_id, serial):
            _log.info("certificate %s of %s superseded by its first use of %s", old, device_id, serial)
            self._close_serial(old, "certificate superseded")
        self._admitted[connection.id] = (device_id, serial)
        return None

    # -- sessions --------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        admitted = self._admitted.pop(ws.id, None)
        if admitted is None:
            await ws.close(CLOSE_TRY_LATER, "the gateway is loading its registry, try again later")
            return
        device_id, serial = admitted
        s = self.settings
        sess = _Session(ws, device_id, serial, s.gateway_window, protocol.TokenBucket(s.gateway_max_frames_per_s))
        sess.readable.set()
        previous = self.sessions.get(device_id)
        if previous is not None:
            self._spawn(previous.ws.close(CLOSE_REPLACED, "replaced by a newer session of the device"))
        self.sessions[device_id] = sess
        self._metrics.connections.add(1)
        try:
            sess.session_id = await self.registry.open_session(device_id, serial, str(ws.remote_address))
            await self._session_event(sess, "device_connected", remote=str(ws.remote_address))
            await self._send_current_setpoint(sess)
            while True:
                if not sess.readable.is_set():
                    self._metrics.paused.add(1)
                    await sess.readable.wait()
                    self._metrics.paused.add(-1)
                if not self.producer.room.is_set():
                    await self.producer.room.wait()
                data = await ws.recv(decode=False)  # bytes: msgspec reads them, no str made (and the size limit is in bytes)
                await self._on_frame(sess, data, time.monotonic())
        except ConnectionClosed:
            pass
        finally:
            self._metrics.connections.add(-1)
            if self.sessions.get(device_id) is sess:
                del self.sessions[device_id]
            if sess.session_id is not None:
                await self.registry.close_session(sess.session_id, ws.close_code, ws.close_reason)
                await self._session_event(sess, "device_disconnected", close_code=ws.close_code, close_reason=ws.close_reason)

    def _close_serial(self, serial: str, reason: str) -> None:
        for sess in list(self.sessions.values()):
            if sess.serial == serial:
                _log.warning("closing the session of %s: %s", sess.device_id, reason)
                self._spawn(sess.ws.close(CLOSE_POLICY, reason))

    async def _on_certificates_changed(self, rows) -> None:
        for row in rows:
            if row.status != "active":
                self._close_serial(row.serial, f"certificate {row.status}")

    # -- frames -----------------------------------------------------------------------------------
    async def _on_frame(self, sess: _Session, data: str | bytes, received: float) -> None:
        s = self.settings
        try:
            frame = protocol.parse_frame(data, max_bytes=s.gateway_max_frame_bytes, max_readings=s.gateway_max_readings)
            if isinstance(frame, protocol.CommandAck):
                self._metrics.frame_counts[(("type", "command_ack"),)] += 1
                self._spawn(self._on_command_ack(sess, frame))
                return
            if not sess.bucket.allow(received):
                raise protocol.FrameError("rate_limited", f"more than {s.gateway_max_frames_per_s:g} frames/s", frame.seq)
        except protocol.FrameError as exc:
            self._metrics.frame_counts[(("type", "refused"), ("reason", exc.reason))] += 1
            sess.send(exc.answer())
            if sess.strikes.add(received):
                self._spawn(sess.ws.close(CLOSE_POLICY, "limits exceeded repeatedly"))
            return
        self._metrics.frame_counts[_TELEMETRY] += 1
        ok, foreign = protocol.split_by_identity(frame, sess.device_id)
        dead = [self._identity_mismatch(sess, *one) for one in foreign]
        sess.unacked += 1
        if sess.unacked >= sess.window:
            sess.readable.clear()
        await self.producer.produce_frame(sess.key, ok, dead, functools.partial(self._answer, sess, frame.seq, foreign, received))

    def _identity_mismatch(self, sess: _Session, index: int, raw: bytes, claimed: str | None) -> OutMessage:
        dlq = self.topics["telemetry.dlq"]
        received_us = int(time.time() * 1_000_000)
        # source_partition = index in the frame, source_offset = receipt time in us: unique per reading
        dead = dead_letter_record(protocol.IDENTITY_MISMATCH, f"the certificate of {sess.device_id} (serial "
                                  f"{sess.serial}) sent a reading for {claimed!r}", raw,
                                  source_topic=f"gateway:{sess.device_id}", source_partition=index,
                                  source_offset=received_us, source_timestamp=received_us // 1000, device_id=claimed)
        return OutMessage(dlq, sess.device_id, self.serde.encode(dlq, dead))

    def _answer(self, sess: _Session, seq: int, foreign, received: float, errors: list[str]) -> None:
        """The frame's answer, within the last delivery report of its messages."""
        sess.unacked -= 1
        if sess.unacked < sess.window:
            sess.readable.set()
        if errors:
            sess.send({"type": "error", "seq": seq, "reason": f"delivery_failed: {errors[0]}"})
        elif foreign:
            claimed = sorted({str(c) for _, _, c in foreign})
            sess.send({"type": "error", "seq": seq, "reason": f"{protocol.IDENTITY_MISMATCH}: "
                            f"{len(foreign)} reading(s) not for {sess.device_id} (for {', '.join(claimed)}) were not published"})
        else:
            sess.send({"type": "ack", "seq": seq})
            self._metrics.ack_ms.record((time.monotonic() - received) * 1000)

    # -- commands -------------------------------------------------------------------------------------
    def _on_command(self, record: dict[str, Any]) -> None:
        device_id = record["device_id"]
        latest = self.latest_setpoints.get(device_id)
        if latest is None or record["start"] >= latest["start"]:
            self.latest_setpoints[device_id] = record
        sess = self.sessions.get(device_id)
        if sess is not None:
            sess.send(protocol.command_frame(record))

    async def _send_current_setpoint(self, sess: _Session) -> None:
        now_ms = int(time.time() * 1000)
        record = self.latest_setpoints.get(sess.device_id)
        if record is None or not record["start"] <= now_ms < record["end"]:
            record = await self.registry.current_setpoint(sess.device_id, now_ms)
        if record is not None:
            sess.send(protocol.command_frame(record))

    async def _on_command_ack(self, sess: _Session, ack: protocol.CommandAck) -> None:
        topic = self.topics["device.command_acks"]
        record = {"command_id": ack.command_id, "device_id": sess.device_id, "start": ack.start_ms, "status": ack.status,
                  "reason": ack.reason, "acked_at": int(time.time() * 1000), "cert_serial": sess.serial}
        await self._publish(OutMessage(topic, sess.device_id, self.serde.encode(topic, record)),
                            f"command ack of {sess.device_id} for {ack.command_id}")
        await self.registry.record_ack(record)

    async def _session_event(self, sess: _Session, kind: str, **detail: Any) -> None:
        """``device_connected`` / ``device_disconnected`` on ``fleet.events`` (alerts.md; vpp.events: one id per session
        and kind), keyed by the device, with the session's id, certificate serial and this gateway."""
        topic, at = self.topics["fleet.events"], int(time.time() * 1000)
        record = event_record(kind, sess.device_id, self.registry.devices.get(sess.device_id, ""), at,
                              {"session_id": sess.session_id, "cert_serial": sess.serial, "gateway": self.name, **detail},
                              sess.session_id)
        await self._publish(OutMessage(topic, sess.device_id, self.serde.encode(topic, record), at), f"{kind} of {sess.device_id}")

    async def _publish(self, message: OutMessage, what: str) -> None:
        """Hand ``message`` to the producer; a delivery that fails is logged (nothing waits for it)."""
        await self.producer.produce_frame(b"", (), [message], functools.partial(_log_undelivered, what))


def _log_undelivered(what: str, errors: list[str]) -> None:
    if errors:
        _log.error("%s not delivered: %s", what, errors[0])
