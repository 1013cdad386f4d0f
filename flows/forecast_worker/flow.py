"""Flow ``forecast-worker``: ``autobidder.forecast.requests`` -> ``autobidder.forecast.results``.

Answers each request of the autobidder (``flows.autobidder.flow``) with a price forecast for
``horizon`` intervals of the request's ``interval_ms`` from its interval (``flows.forecast_worker.logic``):
the model of ``settings.forecast_model_dir`` (the day-ahead model of ``vpp train --method lear``, any
interval, with the request's regressors when it carries them; or the XGBoost 5-minute model) when one
is configured, else, or when the model cannot forecast this request, seasonal persistence (the price
a day earlier, else the last known price); ``method`` and ``detail`` say which and why. Stateless: a
request read twice is answered twice with the same content, and the autobidder takes the first
answer to its request id.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.encode import encode_results
from flows._common.decode import read_decoded
from flows.forecast_worker.logic import answer_forecast, persistence_forecast
from sinks.ports import KafkaPorts, Ports

__all__ = ["build_flow", "load_model", "persistence_forecast", "answer_forecast", "INPUT_TOPICS", "OUTPUT_TOPICS",
           "flow"]

INPUT_TOPICS = ["autobidder.forecast.requests"]
OUTPUT_TOPICS = ("autobidder.forecast.results", "telemetry.dlq")
_AUTO: Any = object()


def load_model(settings):
    """The configured price model (either kind), or None (persistence) when ``forecast_model_dir`` is empty."""
    if not settings.forecast_model_dir:
        return None
    from models.price_model import load

    return load(settings.forecast_model_dir)


def build_flow(settings, *, ports: Ports | None = None, model: Any = _AUTO, now: Callable[[], float] = time.time) -> Dataflow:
    ports = ports or KafkaPorts(settings)
    model = load_model(settings) if model is _AUTO else model
    out_topic = ports.topic("autobidder.forecast.results")
    flow = Dataflow("forecast_worker")
    requests, dead = read_decoded(ports, flow, "forecast_in", INPUT_TOPICS)
    results = op.map("forecast", requests, partial(answer_forecast, model, now))
    encoded = op.flat_map_batch("encode", results, partial(encode_results, ports.serde, out_topic))
    ports.write("forecast_out", op.merge("with_dead_letters", encoded, dead))
    return flow


__getattr__ = flow_from_environment(build_flow)
