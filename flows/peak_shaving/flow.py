"""Flow ``peak-shaving``: ``fleet.aggregates`` -> ``dispatch.commands`` (spec fleet.md section 4).

The declaration only: the decision is ``flows.peak_shaving.logic.shave_step``, keyed by node
(each node's state is independent). Thresholds per node come from the ``[peak_shaving]`` tables
of the TOML settings file (``vpp run --config FILE`` or ``VPP_CONFIG``), read once here at the edge; a node without a threshold is ignored, and a flow
with none at all refuses to start. In Kubernetes the file is a ConfigMap
(``deploy/overlays/peak-shaving``). Commands carry ``program = peak_shaving`` so the dispatch flow
uses only enrolled devices. Undecodable aggregates go to ``telemetry.dlq``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Mapping

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.decode import dead_letters_only, decode_or_dead_letter, is_record
from flows.peak_shaving.logic import ShavingConfig, ShavingState, load_thresholds, shave_step
from sinks.messages import OutMessage
from sinks.ports import KafkaPorts, Ports
from vpp.errors import UserError

__all__ = ["build_flow", "OUTPUT_TOPICS", "flow"]

OUTPUT_TOPICS = ("dispatch.commands", "telemetry.dlq")


def _configured_thresholds(settings) -> dict[str, ShavingConfig]:
    path = settings.config_file or os.environ.get("VPP_CONFIG")
    try:
        thresholds = load_thresholds(path) if path else {}
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if not thresholds:
        raise UserError(f"peak shaving has no thresholds ({'no settings file' if not path else path}): give "
                        'vpp run --config (or VPP_CONFIG) a TOML file with a [peak_shaving.nodes."<node path>"] table per node, '
                        "each with threshold_w (see deploy/overlays/peak-shaving/peak-shaving.toml)")
    return thresholds


def with_threshold(thresholds: Mapping[str, ShavingConfig], records: list[Any]) -> list[tuple[str, dict]]:
    return [(r["node_path"], r) for r in records if is_record(r) and r["node_path"] in thresholds]


def shave(thresholds: Mapping[str, ShavingConfig], state: ShavingState | None, aggregate: dict):
    new_state, command = shave_step(state, aggregate, thresholds[aggregate["node_path"]])
    return new_state, command


def encode_commands(serde, topic: str, items: list[tuple[str, dict | None]]) -> list[OutMessage]:
    commands = [c for _, c in items if c is not None]
    return [OutMessage(topic, c["node_path"], v, c["start"]) for c, v in zip(commands, serde.encode_many(topic, commands))]


def build_flow(settings, *, ports: Ports | None = None, thresholds: Mapping[str, ShavingConfig] | None = None) -> Dataflow:
    """``thresholds`` default to the ``[peak_shaving]`` tables of the settings file (at least one node)."""
    ports = ports or KafkaPorts(settings)
    thresholds = dict(_configured_thresholds(settings) if thresholds is None else thresholds)
    commands_topic, dlq_topic = ports.topic("dispatch.commands"), ports.topic("telemetry.dlq")

    flow = Dataflow("peak_shaving")
    msgs = ports.read(flow, "aggregates_in", ["fleet.aggregates"])
    decoded = op.flat_map_batch("decode", msgs, partial(decode_or_dead_letter, ports.serde, dlq_topic))
    keyed = op.flat_map_batch("with_threshold", decoded, partial(with_threshold, thresholds))
    decisions = op.stateful_map("shave", keyed, partial(shave, thresholds))
    out = op.flat_map_batch("encode", decisions, partial(encode_commands, ports.serde, commands_topic))
    ports.write("commands_out", op.merge("with_dead_letters", out, op.flat_map_batch("dead_letters", decoded, dead_letters_only)))
    return flow


__getattr__ = flow_from_environment(build_flow)
