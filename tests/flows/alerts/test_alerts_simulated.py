"""The simulator's conditions on demand raise the alerts they should, through canonicalize and alerts.

The simulator islands every device of one state node (``islanded <path>``) and makes one dialect's
devices send garbage (``garbage <dialect>``), on the real broker, faster than real time; the
canonicalize and alerts flows run as ``vpp run`` processes. Expected: one grid_outage, on that
state node (its country sees under half islanded), no device alert firing under it, and a dead-letter
spike (garbage names no dialect: it counts as ``unknown``).

Dead letters count at their broker timestamps (wall time: right for a backlog read after a restart),
readings at their event time: at speed 2 the simulator's event time runs ahead of the wall clock by
one second a second, so the dead letters stay inside the spike's 5-minute window for minutes.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from real_services import VppProcesses, vpp_env
from sinks.kafka_tools import TopicCounter
from vpp.serde import Serde
from devtools.simulator.tree import build_fleet

DEVICES, SEED = 60, 21


@pytest.mark.timeout(600)
def test_an_islanded_state_and_a_garbage_dialect_raise_one_outage_and_a_dlq_spike(isolated_settings, tmp_path):
    settings = isolated_settings
    fleet = build_fleet(DEVICES, seed=SEED)
    states = Counter("/".join(d.asset.region_path.split("/")[:2]) for d in fleet.devices)
    node, members = states.most_common(1)[0]
    assert members < DEVICES / 2, "the country must see less than half of its devices islanded"
    dialect = Counter(d.dialect for d in fleet.devices).most_common(1)[0][0]
    conditions = tmp_path / "conditions.txt"
    conditions.write_text(f"islanded {node}\ngarbage {dialect}\n")

    serde = Serde.from_settings(settings)
    alerts = TopicCounter(settings, [settings.topic("fleet.alerts")], from_beginning=True)
    seen: list[dict] = []

    def poll() -> None:
        seen.extend(serde.decode(m.value()) for m in alerts.poll(0.5))

    def has(rule: str, subject: str, state: str) -> bool:
        return any((a["rule"], a["subject"], a["state"]) == (rule, subject, state) for a in seen)

    start_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30))
    with VppProcesses(vpp_env(settings, VPP_ASSETS_REFRESH_S="1"), tmp_path / "procs.log") as procs:
        procs.start("simulate", "--devices", str(DEVICES), "--seed", str(SEED), "--speed", "2", "--no-faults",
                    "--start", start_iso, "--assets-out", str(tmp_path / "assets.csv"),
                    "--conditions-file", str(conditions))
        procs.wait_for((tmp_path / "assets.csv").exists, 60, "the simulator to register its fleet")
        procs.start("run", "canonicalize")
        procs.start("run", "alerts")
        try:
            procs.wait_for(lambda: has("grid_outage", node, "firing") and has("dlq_spike", "unknown", "firing"), 240,
                           f"grid_outage on {node} and a dead-letter spike", poll=poll)
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}; alert records seen: {Counter((a['rule'], a['subject'], a['state']) for a in seen)}; "
                                 f"log:\n{procs.log_tail()}") from None
        time.sleep(3)
        poll()
    alerts.close()
    print(f"{node}: {members} of {DEVICES} devices islanded; alert records {Counter((a['rule'], a['state']) for a in seen)}")
    under = {d.device_id for d in fleet.devices if d.asset.region_path.startswith(node + "/")}
    assert {a["subject"] for a in seen if a["rule"] == "grid_outage"} == {node}
    assert not [a for a in seen if a["subject"] in under and a["state"] == "firing"], "a device alert under the outage fired"
