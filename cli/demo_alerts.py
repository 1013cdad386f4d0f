"""The alerts part of `vpp demo`: conditions the simulator produces on cue, and the alerts they raise.

``--alerts-after`` seconds after the fleet is registered, the demo takes a few devices offline and islands
every device of one state node (the simulator's ``--offline-file`` and ``--conditions-file``, each written
whole and renamed into place); ``hold_s`` later it brings them all back. The alerts flow runs with
thresholds short enough to show the whole lifecycle in about a minute (:func:`demo_alert_settings`;
production keeps the spec's defaults); store-alerts writes every transition to PostgreSQL, where the demo
reads the ``firing`` and ``resolved`` ones to show them live and in its closing summary.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

__all__ = ["AlertConditions", "demo_alert_settings", "hold_s", "AlertScenario", "choose_conditions", "transition_lines"]



def offline_after_s(speed: float) -> float:
    """Simulated seconds of silence that make a device offline in the demo: three readings missed (so one dropped
    reading fires nothing), and at least 3 s of wall time, which a busy 2-core machine can hold a simulator up at
    speed (at speed 10, 15 simulated seconds were 1.5 s: a flood of device_offline that were the machine's, not the
    fleet's)."""
    return max(15.0, 3.0 * speed)


def demo_alert_settings(speed: float) -> dict[str, str]:
    """The alerts flow's settings in the demo (environment variables): offline after :func:`offline_after_s`;
    islanding and outages fire and clear after 5 s."""
    return {"VPP_ALERT_OFFLINE_AFTER_S": f"{offline_after_s(speed):g}",
            "VPP_ALERT_ISLANDED_FOR_S": "5", "VPP_ALERT_ISLANDED_CLEAR_FOR_S": "5",
            "VPP_ALERT_OUTAGE_FOR_S": "5", "VPP_ALERT_OUTAGE_CLEAR_FOR_S": "5"}


def hold_s(speed: float) -> float:
    """Simulated seconds the conditions last: device_offline fires when the silence passes its threshold, and 25 s
    are left for a tick and the pipeline."""
    return offline_after_s(speed) + 25.0


@dataclass(frozen=True)
class AlertConditions:
    """What the demo does to the fleet: these devices go offline, every device under ``islanded`` loses the grid."""

    offline: tuple[str, ...]
    islanded: str


def choose_conditions(assets: Iterable[Any], *, avoid: str | None = None, offline: int = 3) -> AlertConditions | None:
    """Island the state node (depth 2) with the fewest devices (not ``avoid``, the node the demo dispatches);
    take offline the first ``offline`` devices by id under neither (pure)."""
    by_state: dict[str, list[str]] = {}
    for a in assets:
        parts = a.region_path.split("/")
        if len(parts) >= 2:
            by_state.setdefault("/".join(parts[:2]), []).append(a.device_id)
    candidates = [n for n in by_state if n != avoid]
    if not candidates:
        return None
    islanded = min(candidates, key=lambda n: (len(by_state[n]), n))
    others = sorted(d for n, ids in by_state.items() if n not in (islanded, avoid) for d in ids)
    return AlertConditions(tuple(others[:offline]), islanded)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # the simulator never reads half a file


@dataclass
class AlertScenario:
    """Writes the simulator's offline and conditions files at ``start`` and empties them ``hold_s`` later;
    reads the transitions stored since it was made."""

    offline_file: Path
    conditions_file: Path
    conditions: AlertConditions | None = None
    start: float | None = None  # monotonic seconds
    hold_s: float = 40.0  # wall seconds, set by plan()
    since: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    phase: int = 0  # 0 waiting, 1 conditions on, 2 back to normal

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> "AlertScenario":
        """Empty files in the state directory (a previous demo's conditions are void)."""
        scenario = cls(state_dir / "demo-offline.txt", state_dir / "demo-conditions.txt")
        for path in (scenario.offline_file, scenario.conditions_file):
            _write_atomically(path, "")
        return scenario

    def simulator_args(self) -> list[str]:
        return ["--offline-file", str(self.offline_file), "--conditions-file", str(self.conditions_file)]

    def plan(self, conditions: AlertConditions | None, start: float, speed: float = 1.0) -> None:
        """Apply ``conditions`` at ``start`` (monotonic s) for :func:`hold_s` of simulated time at ``speed``."""
        self.conditions, self.start, self.hold_s = conditions, start, hold_s(speed) / speed

    def step(self, now: float) -> str | None:
        """Apply the conditions when their time has come; a line saying what changed, or None."""
        c = self.conditions
        if c is None or self.start is None or self.phase == 2:
            return None
        if self.phase == 0 and now >= self.start:
            _write_atomically(self.offline_file, "".join(f"{d}\n" for d in c.offline))
            _write_atomically(self.conditions_file, f"islanded {c.islanded}\n")
            self.phase = 1
            return (f"alerts scenario: took {', '.join(c.offline)} offline and islanded every device under "
                    f"{c.islanded} for {self.hold_s:.0f} s (wall time)")
        if self.phase == 1 and now >= self.start + self.hold_s:
            _write_atomically(self.offline_file, "")
            _write_atomically(self.conditions_file, "")
            self.phase = 2
            return f"alerts scenario: {', '.join(c.offline)} back online, {c.islanded} back on the grid"
        return None

    def transitions(self, dsn: str) -> list[dict[str, Any]]:
        """The firing and resolved transitions stored since the scenario was made (empty until store-alerts runs)."""
        from sinks.alert_admin import alert_transitions

        try:
            return alert_transitions(dsn, self.since)
        except Exception:  # noqa: BLE001 - the tables fill as store-alerts runs; show nothing until then
            return []


def transition_lines(rows: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(event time, state, rule, subject, summary) of each transition, for a table or the summary (pure)."""
    return [(r["at"].astimezone(timezone.utc).strftime("%H:%M:%S"), f"{r['state']:<8}", f"{r['rule']:<18}",
             f"{r['subject']:<12}", r["summary"] or "") for r in rows]


def alerts_panel(rows: list[dict[str, Any]], conditions: AlertConditions | None):
    """The live table of alert transitions."""
    from rich.table import Table

    title = "alerts: firing and resolved (fleet.alerts via store-alerts)"
    if conditions is not None:
        title += f"; scenario: {len(conditions.offline)} devices offline, {conditions.islanded} islanded"
    table = Table(title=title)
    for col in ("time (UTC)", "state", "rule", "subject", "summary"):
        table.add_column(col)
    for line in transition_lines(rows[-8:]):
        table.add_row(*line)
    if not rows:
        table.add_row("none yet", "", "", "", "")
    return table


def wait_for_assets(path: Path, deadline: float):
    """The simulator's fleet (its assets CSV) once written, or None at ``deadline`` (monotonic)."""
    from vpp.assets import load_assets_csv

    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(load_assets_csv(path).values()) if path.exists() else None
