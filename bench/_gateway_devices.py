"""The simulated devices of bench/gateway.py: their own process (asyncio, one mutual-TLS WebSocket each),
driven by the orchestrator over a pipe (connect, flood, live, arm, storm, exit)."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections import Counter
from pathlib import Path

import orjson

__all__ = ["envelope", "devices_main"]


def envelope(device_id: str, n: int) -> dict:
    return {"device_id": device_id, "dialect": "sonnen/2", "received_at": "2026-12-07T15:00:00.000Z",
            "payload": {"Timestamp": "2026-12-07 07:00:00", "USOC": n % 100, "Pac_total_W": 100, "Production_W": 0,
                        "Consumption_W": 400, "GridFeedIn_W": -300, "SystemStatus": "OnGrid"}}


def _readings(device_id: str, n: int) -> list[dict]:
    return [envelope(device_id, i) for i in range(n)]


# -- the devices' process ---------------------------------------------------------------------------
class _Device:
    def __init__(self, device_id: str, certs: Path, url: str, window: int, compression: str | None):
        self.device_id, self.url, self.window, self.compression = device_id, url, window, compression
        self.ctx = ssl.create_default_context(cafile=str(certs / device_id / "ca.pem"))
        self.ctx.load_cert_chain(certs / device_id / "device.pem", certs / device_id / "device.key")
        self.connected = asyncio.Event()
        self.ws = None
        self.mode, self.per_frame, self.tail = "idle", 1, ""
        self.sent_at: dict[int, float] = {}
        self.acked_readings, self.latencies, self.seq, self.refused = 0, [], 0, 0
        self.connects: list[float] = []  # time.monotonic() of each connection opened (a clock every process shares)
        self.probe_seq: int | None = None  # set: the next connection sends one reading first and records its ack
        self.probe_acked: float | None = None
        self.attempts, self.failures, self.armed_at = 0, Counter(), float("inf")

    async def run(self) -> None:
        from websockets.asyncio.client import connect

        backoff = 0.5
        while True:
            started, acked, ws = time.monotonic(), False, None
            self.attempts += started >= self.armed_at
            try:
                async with connect(self.url, ssl=self.ctx, open_timeout=60, ping_interval=None,
                                   compression=self.compression) as ws:
                    self.ws, backoff = ws, 0.5
                    self.connects.append(time.monotonic())
                    self.connected.set()
                    self.sent_at.clear()
                    if self.probe_seq is not None:
                        self._frames_of(1)
                        await self._send()
                        self.probe_seq = self.seq
                    async for message in ws:
                        frame = json.loads(message)
                        sent = self.sent_at.pop(frame.get("seq"), None)
                        if sent is None:
                            continue
                        acked = acked or frame.get("type") == "ack"
                        if frame.get("seq") == self.probe_seq and frame.get("type") == "ack":
                            self.probe_seq, self.probe_acked = None, time.monotonic()
                        if frame.get("type") == "ack":
                            self.latencies.append(time.perf_counter() - sent)
                            self.acked_readings += self.per_frame
                        else:  # refused (e.g. more than gateway_max_frames_per_s): not counted
                            self.refused += 1
                        if self.mode == "flood":
                            await self._send()
            except Exception as exc:  # noqa: BLE001 - a device keeps trying, as a real one does
                failure = type(exc).__name__
            else:
                failure = "closed"
            if started >= self.armed_at and not acked:  # an attempt after the restart began, without an ack
                self.failures[f"closed {ws.close_code}" if ws is not None and ws.close_code else failure] += 1
            self.connected.clear()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 8.0)

    async def _send(self) -> None:
        self.seq += 1
        self.sent_at[self.seq] = time.perf_counter()
        await self.ws.send(f'{{"type":"telemetry","seq":{self.seq}{self.tail}')

    def _frames_of(self, per_frame: int) -> None:
        # the load generator shares the gateway's two cores: a device's readings are encoded once per phase
        # (the gateway still parses and re-encodes every reading of every frame)
        self.per_frame = per_frame
        self.tail = ',"readings":' + orjson.dumps(_readings(self.device_id, per_frame)).decode() + "}"

    async def flood(self, per_frame: int) -> None:
        self.mode = "flood"
        self._frames_of(per_frame)
        for _ in range(self.window):
            await self._send()

    async def live(self, seconds: float) -> None:
        self.mode = "live"
        self._frames_of(1)
        await asyncio.sleep(random.uniform(0, 5))
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await self._send()
            await asyncio.sleep(5.0)


def devices_main(conn, device_ids: list[str], certs: str, url: str, window: int, compression: str | None) -> None:
    async def main() -> None:
        devices = [_Device(d, Path(certs), url, window, compression) for d in device_ids]
        runners = [asyncio.create_task(d.run()) for d in devices]
        loop = asyncio.get_running_loop()
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            started = time.perf_counter()
            if command == "connected":
                await asyncio.gather(*(d.connected.wait() for d in devices))
                conn.send(time.perf_counter() - started)
            elif command == "flood":
                for d in devices:
                    d.acked_readings, d.latencies = 0, []
                await asyncio.gather(*(d.flood(arg[1]) for d in devices))
                await asyncio.sleep(arg[0])
                for d in devices:
                    d.mode = "idle"
                rtts = sorted(x for d in devices for x in d.latencies)
                conn.send((sum(d.acked_readings for d in devices) / (time.perf_counter() - started),
                           sum(d.refused for d in devices), rtts[len(rtts) // 2] if rtts else 0.0))
                deadline = time.perf_counter() + 300
                while any(d.sent_at for d in devices) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.1)  # the frames still in flight come back before the next phase
                conn.send(None)
            elif command == "live":
                for d in devices:
                    d.latencies = []
                await asyncio.gather(*(d.live(arg) for d in devices))
                await asyncio.sleep(1)
                conn.send(sorted(x for d in devices for x in d.latencies))
            elif command == "arm":  # before a restart: each device's next connection sends a reading first
                for d in devices:
                    d.probe_seq, d.probe_acked, d.attempts, d.failures = -1, None, 0, Counter()
                    d.armed_at = time.monotonic()
                conn.send(None)
            elif command == "storm":  # arg: time.monotonic() of the restart; until every device is connected and acked
                deadline = time.monotonic() + 600
                while any(d.probe_acked is None for d in devices) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                firsts = [min((t for t in d.connects if t >= arg), default=float("inf")) for d in devices]
                conn.send((max(firsts) - arg, max(d.probe_acked or float("inf") for d in devices) - arg,
                           sum(d.attempts for d in devices), dict(sum((d.failures for d in devices), Counter()))))
            elif command == "exit":
                for runner in runners:
                    runner.cancel()
                conn.send(None)
                return

    asyncio.run(main())
