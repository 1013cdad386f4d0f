"""The Kafka ACLs written down in deploy/README.md are the topics each flow really reads and writes.

Derived from each flow's code: the topics of its ``ports.read`` (or ``read_decoded``) calls and its ``OUTPUT_TOPICS`` (a flow
without them writes only dead letters). A flow that starts reading or writing another topic fails this
test until its row (and the broker's ACLs) say so.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from cli.flows import FLOWS

REPO = Path(__file__).resolve().parents[2]


def _documented() -> dict[str, tuple[set[str], set[str]]]:
    rows = {}
    for line in (REPO / "deploy" / "README.md").read_text().splitlines():
        match = re.match(r"\| `vpp-([a-z-]+)` \|([^|]*)\|([^|]*)\|$", line)
        if match:
            name, read, write = match.groups()
            rows[name] = ({t.strip() for t in read.split(",") if t.strip()}, {t.strip() for t in write.split(",") if t.strip()})
    return rows


def _from_code(flow: str) -> tuple[set[str], set[str]]:
    module_name = FLOWS[flow][0]
    module = importlib.import_module(module_name)
    source = Path(module.__file__).read_text()
    read: set[str] = set()
    for call in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)):
        func = call.func
        ports_read = isinstance(func, ast.Attribute) and func.attr == "read" and getattr(func.value, "id", "") == "ports"
        if ports_read or getattr(func, "id", "") == "read_decoded":  # read_decoded(ports, flow, step_id, topics)
            topics = call.args[2 if ports_read else 3]
            read |= set(module.INPUT_TOPICS) if isinstance(topics, ast.Name) else set(ast.literal_eval(topics))
    written = set(getattr(module, "OUTPUT_TOPICS", ("telemetry.dlq",) if "ports.write(" in source else ()))
    return read, written


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_each_flows_documented_acls_are_the_topics_it_reads_and_writes(flow: str) -> None:
    documented = _documented()
    assert flow in documented, f"deploy/README.md has no ACL row for principal vpp-{flow}"
    assert documented[flow] == _from_code(flow)
