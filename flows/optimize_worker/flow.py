"""Flow ``optimize-worker``: ``autobidder.optimize.requests`` -> ``autobidder.optimize.results``.

Answers each request of the autobidder with ``models.optimize.plan`` over the request's
forecast prices at its ``interval_ms`` (5 minutes, 15 minutes, an hour...), what charging costs when
the request says (a risk-aware plan sells at the forecast's p10 and buys at its p90) and its battery,
with the solver ``settings.optimize_solver`` and each solve bounded
by ``settings.optimize_time_limit_s`` (0: no bound); the solver status comes back with the
schedule. Stateless: a request read twice is answered twice, and the autobidder
takes the first answer to its request id.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.decode import read_decoded
from flows._common.encode import encode_results
from sinks.ports import KafkaPorts, Ports

__all__ = ["build_flow", "answer_optimize", "solver_options", "INPUT_TOPICS", "OUTPUT_TOPICS", "flow"]

INPUT_TOPICS = ["autobidder.optimize.requests"]
OUTPUT_TOPICS = ("autobidder.optimize.results", "telemetry.dlq")
#: The interval of a request written before requests carried one.
_DEFAULT_INTERVAL_MS = 300_000


def answer_optimize(solver: str, time_limit_s: float | None, now: Callable[[], float], request: dict[str, Any]) -> dict[str, Any]:
    """The ``optimize_result`` answering ``request``: the plan, or an empty one with the reason as status."""
    from models.optimize import Battery, PricePoint, plan

    start, interval_ms = int(request["interval_start"]), int(request.get("interval_ms") or _DEFAULT_INTERVAL_MS)
    out = {"request_id": request["request_id"], "node_path": request["node_path"], "interval_start": start,
           "status": "error", "charge_w": [], "discharge_w": [], "energy_wh": [], "final_energy_wh": None,
           "revenue_usd": None, "produced_at": 0}
    try:
        battery = Battery(capacity_wh=request["capacity_wh"], max_charge_w=request["max_charge_w"],
                          max_discharge_w=request["max_discharge_w"], soc_pct=request["soc_pct"],
                          reserve_pct=request["reserve_pct"], efficiency=request["efficiency"],
                          degradation_usd_per_mwh=request["degradation_usd_per_mwh"])
        prices = [PricePoint(datetime.fromtimestamp((start + k * interval_ms) / 1000, timezone.utc), float(p))
                  for k, p in enumerate(request["prices_usd_per_mwh"])]
        schedule = plan(prices, battery, solver=solver, time_limit_s=time_limit_s,
                        interval=timedelta(milliseconds=interval_ms),
                        charge_prices=[float(p) for p in request.get("charge_prices_usd_per_mwh") or []] or None)
    except ValueError as exc:  # a request the model cannot take: answered, so the autobidder falls back now
        out.update(status=f"error: {exc}", produced_at=int(now() * 1000))
        return out
    out.update(status=schedule.status, revenue_usd=schedule.revenue_usd, final_energy_wh=schedule.final_energy_wh,
               charge_w=[i.charge_w for i in schedule.intervals], discharge_w=[i.discharge_w for i in schedule.intervals],
               energy_wh=[i.energy_wh for i in schedule.intervals], produced_at=int(now() * 1000))
    return out


def solver_options(settings) -> tuple[str, float | None]:
    """``(solver, time_limit_s)`` of the settings; ``ValueError`` for a solver ``plan`` does not know."""
    from models.optimize import SOLVERS

    if settings.optimize_solver not in SOLVERS:
        raise ValueError(f"optimize_solver {settings.optimize_solver!r} is not one of {', '.join(SOLVERS)}")
    if settings.optimize_time_limit_s < 0:
        raise ValueError(f"optimize_time_limit_s must be 0 (no bound) or positive, got {settings.optimize_time_limit_s}")
    return settings.optimize_solver, settings.optimize_time_limit_s or None


def build_flow(settings, *, ports: Ports | None = None, now: Callable[[], float] = time.time) -> Dataflow:
    solver, time_limit_s = solver_options(settings)
    ports = ports or KafkaPorts(settings)
    out_topic = ports.topic("autobidder.optimize.results")
    flow = Dataflow("optimize_worker")
    requests, dead = read_decoded(ports, flow, "optimize_in", INPUT_TOPICS)
    results = op.map("optimize", requests, partial(answer_optimize, solver, time_limit_s, now))
    encoded = op.flat_map_batch("encode", results, partial(encode_results, ports.serde, out_topic))
    ports.write("optimize_out", op.merge("with_dead_letters", encoded, dead))
    return flow


__getattr__ = flow_from_environment(build_flow)
