"""The simulated fleet through the device gateway: one mutual-TLS WebSocket per device (edge.md section 3).

``run_via_gateway(settings, options, url, certs_dir, stop_event)`` runs the same simulation as
``kafka_io.run_publisher`` but every device connects to ``url`` with its own certificate
(``certs_dir/<device_id>/device.pem``, ``device.key``, ``ca.pem``, as ``vpp pki issue --all`` writes
them), sends its readings in ``telemetry`` frames (at most ``window`` unacknowledged; a frame is
resent after a reconnect or a ``delivery_failed`` error, so a reading is delivered at least once),
applies the ``command`` frames it receives and answers each with a ``command_ack``.

Readings the fault injector turned into non-JSON bytes cannot travel in a JSON frame: they are
counted (``PublishReport.stats["not_sendable"]``) and not sent. A device that loses its connection
reconnects with jittered exponential backoff (0.5 s doubling to 30 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from vpp.errors import UserError
from devtools.simulator.kafka_io import OnDemandFiles, PublishOptions, PublishReport, register_fleet
from devtools.simulator.stream import SetPoint, Simulation, SimulationConfig
from devtools.simulator.tree import build_fleet

__all__ = ["run_via_gateway", "DeviceLink"]

log = logging.getLogger(__name__)
_TICK_S = 0.05


def device_ssl_context(cert_dir: Path) -> ssl.SSLContext:
    missing = [n for n in ("device.pem", "device.key", "ca.pem") if not (cert_dir / n).exists()]
    if missing:
        raise UserError(f"{cert_dir} lacks {', '.join(missing)} (vpp pki issue --all --out DIR writes DIR/<device_id>/)")
    ctx = ssl.create_default_context(cafile=str(cert_dir / "ca.pem"))
    ctx.load_cert_chain(cert_dir / "device.pem", cert_dir / "device.key")
    return ctx


class DeviceLink:
    """One device's connection: a queue of readings, frames in flight, commands in, acks out."""

    def __init__(self, device_id: str, url: str, ctx: ssl.SSLContext, report: PublishReport,
                 on_command: Callable[[dict], bool], *, window: int = 8, max_readings: int = 500):
        self.device_id, self.url, self.ctx, self.report = device_id, url, ctx, report
        self.on_command, self.window, self.max_readings = on_command, window, max_readings
        self.pending: deque[Any] = deque()
        self.in_flight: dict[int, list[Any]] = {}
        self.seq = 0
        self.wake = asyncio.Event()
        self.connected = False

    def enqueue(self, readings: list[Any]) -> None:
        self.pending.extend(readings)
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        backoff = 0.5
        while not stop.is_set():
            try:
                async with connect(self.url, ssl=self.ctx, open_timeout=20, max_size=2**22) as ws:
                    self.connected, backoff = True, 0.5
                    await self._session(ws, stop)
            except (OSError, InvalidHandshake, ConnectionClosed, asyncio.TimeoutError) as exc:
                log.debug("%s: connection lost: %s", self.device_id, exc)
            self.connected = False
            for seq in sorted(self.in_flight, reverse=True):  # unacknowledged frames go again, in order
                self.pending.extendleft(reversed(self.in_flight.pop(seq)))
            if stop.is_set():
                break
            self.report.stats["reconnects"] = self.report.stats.get("reconnects", 0) + 1
            try:
                await asyncio.wait_for(stop.wait(), backoff * random.uniform(0.5, 1.5))
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, 30.0)

    async def _session(self, ws, stop: asyncio.Event) -> None:
        reader = asyncio.create_task(self._read(ws))
        try:
            while not stop.is_set() and not reader.done():
                while self.pending and len(self.in_flight) < self.window:
                    batch = [self.pending.popleft() for _ in range(min(self.max_readings, len(self.pending)))]
                    self.seq += 1
                    self.in_flight[self.seq] = batch
                    await ws.send(json.dumps({"type": "telemetry", "seq": self.seq, "readings": batch}))
                self.wake.clear()
                waiter = asyncio.create_task(self.wake.wait())
                await asyncio.wait([reader, waiter], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if stop.is_set():
                await self._drain(reader)
        finally:
            reader.cancel()

    async def _drain(self, reader: asyncio.Task, timeout_s: float = 10.0) -> None:
        """Stopping: wait for the acks of frames in flight (the readings are otherwise lost)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and not reader.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _read(self, ws) -> None:
        async for message in ws:
            frame = json.loads(message)
            kind = frame.get("type")
            if kind == "ack":
                self.report.produced += len(self.in_flight.pop(frame["seq"], ()))
                self.wake.set()
            elif kind == "error":
                self.report.delivery_errors += 1
                batch = self.in_flight.pop(frame.get("seq"), None)
                if batch is not None and str(frame.get("reason", "")).startswith("delivery_failed"):
                    self.pending.extendleft(reversed(batch))  # the broker failed: send again
                log.warning("%s: frame %s refused: %s", self.device_id, frame.get("seq"), frame.get("reason"))
                self.wake.set()
            elif kind == "command":
                applied = self.on_command(frame)
                await ws.send(json.dumps({"type": "command_ack", "command_id": frame["command_id"], "start": frame["start"],
                                          "status": "applied" if applied else "rejected",
                                          "reason": None if applied else "the device is offline or does not know it"}))


def _readings(records) -> dict[str, list[Any]]:
    """Records grouped by device as JSON values; readings that are not JSON cannot be framed (None key)."""
    out: dict[str, list[Any]] = {}
    for rec in records:
        try:
            value = json.loads(rec.value)
        except ValueError:
            out.setdefault("", []).append(None)
            continue
        out.setdefault(rec.key.decode(), []).append(value)
    return out


async def _run(settings: Any, options: PublishOptions, url: str, certs_dir: Path, stop_event: threading.Event,
               report: PublishReport, sim: Simulation, on_progress) -> None:
    stop = asyncio.Event()
    links: dict[str, DeviceLink] = {}

    def on_command(device_id: str):
        def apply(frame: dict) -> bool:
            sp = SetPoint(device_id, float(frame["setpoint_w"]), int(frame["start"]), int(frame["end"]), str(frame["command_id"]))
            applied = sim.apply_setpoint(sp)
            report.setpoints_applied += applied
            return applied
        return apply

    for device in report.fleet.assets():
        links[device.device_id] = DeviceLink(device.device_id, url, device_ssl_context(certs_dir / device.device_id), report,
                                             on_command(device.device_id), window=settings.gateway_window,
                                             max_readings=settings.gateway_max_readings)
    tasks = [asyncio.create_task(link.run(stop)) for link in links.values()]
    on_demand = OnDemandFiles(options)
    start_ms, wall0, last_progress = sim.config.start_ms, time.monotonic(), time.monotonic()
    end_ms = None if options.duration_s is None else start_ms + round(options.duration_s * 1000)
    try:
        while not stop_event.is_set():
            on_demand.apply(sim, report)
            event_now = start_ms + int((time.monotonic() - wall0) * 1000 * options.speed)
            last = end_ms is not None and event_now >= end_ms
            records = [e.record for e in sim.advance(end_ms - 1) + sim.drain()] if last else sim.step(event_now)
            for device_id, readings in _readings(records).items():
                if device_id == "":
                    report.stats["not_sendable"] = report.stats.get("not_sendable", 0) + len(readings)
                elif device_id in links:
                    links[device_id].enqueue(readings)
            report.last_event_ms = end_ms if last else event_now
            if last:
                break
            if on_progress and time.monotonic() - last_progress >= 10.0:
                last_progress = time.monotonic()
                on_progress(report)
            await asyncio.sleep(_TICK_S)
        deadline = time.monotonic() + 30
        while any(link.pending or link.in_flight for link in links.values() if link.connected) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # let every connected device send what it holds
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        report.stats.update({k: v for k, v in sim.stats.items()})
        report.stats["connected_at_end"] = sum(link.connected for link in links.values())


def run_via_gateway(settings: Any, options: PublishOptions, url: str, certs_dir: str | Path,
                    stop_event: threading.Event | None = None, on_progress=None) -> PublishReport:
    """Simulate until the duration is over or ``stop_event`` is set, every device speaking through ``url``."""
    from vpp.assets import write_assets_csv

    fleet = build_fleet(options.n_devices, options.depth, options.fanout, options.seed)
    csv_path = Path(options.assets_out) if options.assets_out else Path(settings.state_dir) / "assets.csv"
    if options.register:
        register_fleet(settings.postgres_dsn, fleet)
    # written once the registry holds the fleet: the CSV appearing is the sign that devices are registered
    report = PublishReport(fleet=fleet, assets_csv=write_assets_csv(csv_path, fleet.assets()))
    start_ms = options.start_ms if options.start_ms is not None else int(time.time() * 1000)
    sim = Simulation(fleet, SimulationConfig(start_ms=start_ms, rate_s=options.rate_s, faults=options.faults, seed=options.seed,
                                             program_reserve_pct=options.program_reserve_pct, load_surge=options.load_surge))
    asyncio.run(_run(settings, options, url, Path(certs_dir), stop_event or threading.Event(), report, sim, on_progress))
    return report
