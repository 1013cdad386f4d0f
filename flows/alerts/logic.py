"""The alert rules of spec/alerts.md as pure functions, and the lifecycle of one alert.

An alert is one rule about one subject; ``(rule, subject)`` is its identity and at most one alert
per identity is open (a :class:`Track`). :func:`observe` moves it through its lifecycle given
what the rule sees at an event time ``at``:

- ``raised``: the raise condition holds (SoC < 10 %, ...);
- ``cleared``: the clear condition holds (SoC >= 15 %, ...). Between the two (hysteresis band) a
  firing alert keeps its state, so a value hovering around one threshold does not flap; a pending
  one is dropped (alerts.md: pending is "condition true, waiting for_s", it fires only when raised
  for ``for_ms``; kept, a pending outage of a few first reports would wait in the band for ever and
  inhibit the nodes below it).

Lifecycle: nothing -> ``pending`` (raised; waits ``for_ms``) -> ``firing`` (raised for ``for_ms``)
-> ``resolved`` (cleared for ``clear_for_ms``). A pending alert no longer raised (or inhibited) is
``dropped``: it never fired. Each change is one record; firing and resolving also give an
``alert_firing`` / ``alert_resolved`` event. Ids are hashes of what they identify, so the same input
read twice (at-least-once delivery, a restart) gives the same ids and the stores keep one copy.

No I/O, no clocks: times are event-time epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from vpp.events import event_id, event_record, stable_id

__all__ = ["RULES", "RuleSpec", "Track", "Emitted", "RuleConfig", "observe", "resolve", "alert_id", "event_id",
           "dlq_threshold", "shortfall_misses", "command_event", "COMMAND_EVENT_KINDS"]


@dataclass(frozen=True)
class RuleSpec:
    """How one rule times its alerts: ``for_ms`` before firing, ``clear_for_ms`` before resolving."""

    rule: str
    severity: str
    for_ms: int = 0
    clear_for_ms: int = 0


@dataclass(frozen=True)
class RuleConfig:
    """Every rule's thresholds, from the settings (``alert_*``)."""

    tick_ms: int = 5_000
    offline_ms: int = 90_000
    offline_resolve_readings: int = 2
    low_soc_raise_pct: float = 10.0
    low_soc_clear_pct: float = 15.0
    low_soc_for_ms: int = 300_000
    islanded_for_ms: int = 30_000
    islanded_clear_for_ms: int = 60_000
    outage_raise_ratio: float = 0.5
    outage_clear_ratio: float = 0.2
    outage_for_ms: int = 60_000
    outage_clear_for_ms: int = 300_000
    reporting_ms: int = 60_000  # a device counts as reporting for grid_outage if heard within this
    dlq_window_ms: int = 300_000
    dlq_baseline_ms: int = 3_600_000
    dlq_factor: float = 5.0
    dlq_min: float = 20.0
    dlq_clear_for_ms: int = 600_000
    shortfall_pct: float = 5.0
    shortfall_min_w: float = 1000.0
    shortfall_windows: int = 2
    reader_idle_s: float = 10.0  # a reader (or partition) silent this long in wall time is not waited for
    forget_ms: int = 7 * 86_400_000  # a device silent this long leaves the state (its alerts end)

    @classmethod
    def from_settings(cls, s) -> "RuleConfig":
        return cls(tick_ms=s.alert_tick_s * 1000, offline_ms=s.alert_offline_after_s * 1000,
                   offline_resolve_readings=s.alert_offline_resolve_readings,
                   low_soc_raise_pct=s.alert_low_soc_raise_pct, low_soc_clear_pct=s.alert_low_soc_clear_pct,
                   low_soc_for_ms=s.alert_low_soc_for_s * 1000, islanded_for_ms=s.alert_islanded_for_s * 1000,
                   islanded_clear_for_ms=s.alert_islanded_clear_for_s * 1000,
                   outage_raise_ratio=s.alert_outage_raise_ratio, outage_clear_ratio=s.alert_outage_clear_ratio,
                   outage_for_ms=s.alert_outage_for_s * 1000, outage_clear_for_ms=s.alert_outage_clear_for_s * 1000,
                   reporting_ms=s.staleness_s * 1000,
                   dlq_window_ms=s.alert_dlq_window_s * 1000, dlq_baseline_ms=s.alert_dlq_baseline_s * 1000,
                   dlq_factor=s.alert_dlq_factor, dlq_min=s.alert_dlq_min, dlq_clear_for_ms=s.alert_dlq_clear_for_s * 1000,
                   shortfall_pct=s.alert_shortfall_pct, shortfall_min_w=s.alert_shortfall_min_w,
                   shortfall_windows=s.alert_shortfall_windows, forget_ms=s.alert_forget_after_s * 1000)

    @cached_property
    def spec_of(self) -> dict[str, RuleSpec]:
        return self.specs()

    def specs(self) -> dict[str, RuleSpec]:
        return {
            "device_offline": RuleSpec("device_offline", "warning"),
            "low_soc": RuleSpec("low_soc", "warning", self.low_soc_for_ms),
            "islanded": RuleSpec("islanded", "warning", self.islanded_for_ms, self.islanded_clear_for_ms),
            "grid_outage": RuleSpec("grid_outage", "critical", self.outage_for_ms, self.outage_clear_for_ms),
            "dlq_spike": RuleSpec("dlq_spike", "warning", 0, self.dlq_clear_for_ms),
            "dispatch_shortfall": RuleSpec("dispatch_shortfall", "critical"),
        }


RULES = tuple(RuleConfig().specs())

_SUMMARIES = {
    "device_offline": "device {subject}: no reading for {value:.0f} s (threshold {threshold:.0f} s)",
    "low_soc": "device {subject}: SoC {value:.1f} % (below {threshold:.1f} %)",
    "islanded": "device {subject}: islanded (grid_connected false)",
    "grid_outage": "node {subject}: {value:.0%} of reporting devices islanded (threshold {threshold:.0%})",
    "dlq_spike": "dialect {subject}: {value:.0f} dead letters in the window (threshold {threshold:.0f})",
    "dispatch_shortfall": "node {subject}: measured power misses its allocation by {value:.0f} W (allowed {threshold:.0f} W)",
}

_RESOLVED = "{rule} {subject}: resolved"


def alert_id(rule: str, subject: str, started_at: int) -> str:
    """The id of the alert of ``(rule, subject)`` whose condition became true at ``started_at``."""
    return stable_id("alert", rule, subject, started_at)


@dataclass
class Track:
    """One open alert (pending or firing). Picklable: it lives in the flow's recovery snapshots."""

    rule: str
    subject: str
    node_path: str
    state: str  # "pending" | "firing"
    started_at: int
    value: float
    threshold: float
    clear_since: int | None = None
    count: int = 0  # device_offline: readings since it fired

    @property
    def alert_id(self) -> str:
        return alert_id(self.rule, self.subject, self.started_at)


@dataclass
class Emitted:
    """What one step produced: ``fleet.alerts`` records and ``fleet.events`` records, in order."""

    alerts: list[dict[str, Any]]
    events: list[dict[str, Any]]

    def __init__(self) -> None:
        self.alerts, self.events = [], []

    def __bool__(self) -> bool:
        return bool(self.alerts or self.events)

    def record(self, track: Track, state: str, at: int, severity: str, summary: str | None = None) -> None:
        rec = {"alert_id": track.alert_id, "rule": track.rule, "subject": track.subject, "node_path": track.node_path,
               "state": state, "severity": severity, "value": float(track.value), "threshold": float(track.threshold),
               "started_at": track.started_at, "at": at,
               "summary": summary or (_RESOLVED if state == "resolved" else _SUMMARIES[track.rule]).format(rule=track.rule,subject=track.subject, value=track.value,
                                                                   threshold=track.threshold)}
        self.alerts.append(rec)
        if state in ("firing", "resolved"):
            kind = f"alert_{state}"
            self.events.append(event_record(kind, rec["alert_id"], track.node_path, at,
                                            {"rule": track.rule, "subject": track.subject, "severity": severity,
                                             "summary": rec["summary"]}, id_at=0))


def observe(track: Track | None, spec: RuleSpec, out: Emitted, *, subject: str, node_path: str, at: int,
            raised: bool, cleared: bool, value: float, threshold: float, inhibited: bool = False,
            started_at: int | None = None, may_fire: bool = True) -> Track | None:
    """The alert of ``(spec.rule, subject)`` after the rule saw ``value`` at ``at``; records go to ``out``.

    ``inhibited``: a cause higher up already has an alert; no alert is raised (a pending one is
    dropped), one already firing runs its course. ``started_at``: when the condition became true, if
    earlier than ``at`` (device_offline: the last reading plus the silence allowed). ``may_fire`` False:
    a pending alert waits for a later observation to fire (it may still be dropped).
    """
    if track is None:
        if not raised or inhibited:
            return None
        track = Track(spec.rule, subject, node_path, "pending", at if started_at is None else started_at, value, threshold)
        if (spec.for_ms > 0 and at - track.started_at < spec.for_ms) or not may_fire:
            out.record(track, "pending", at, spec.severity)
            return track
        track.state = "firing"
        out.record(track, "firing", at, spec.severity)
        return track
    track.value, track.threshold = value, threshold
    if track.state == "pending":
        if not raised or cleared or inhibited:
            out.record(track, "dropped", at, spec.severity,
                       "inhibited by an alert on a node above" if inhibited and not cleared else None)
            return None
        if raised and may_fire and at - track.started_at >= spec.for_ms:
            track.state = "firing"
            out.record(track, "firing", at, spec.severity)
        return track
    if not cleared:
        track.clear_since = None
        return track
    if track.clear_since is None:
        track.clear_since = at
    if at - track.clear_since >= spec.clear_for_ms:
        out.record(track, "resolved", at, spec.severity)
        return None
    return track


def resolve(track: Track, spec: RuleSpec, out: Emitted, at: int, why: str) -> None:
    """End an open alert whose rule can no longer be evaluated (its command ended): resolved, or dropped if pending."""
    out.record(track, "resolved" if track.state == "firing" else "dropped", at, spec.severity, why)


# -- rule functions ------------------------------------------------------------------------------------


def dlq_threshold(baseline_count: int, cfg: RuleConfig) -> float:
    """Dead letters over the window above which a dialect spikes: max(factor x the baseline's rate, min)."""
    rate_per_window = baseline_count * cfg.dlq_window_ms / cfg.dlq_baseline_ms
    return max(cfg.dlq_factor * rate_per_window, cfg.dlq_min)


def shortfall_misses(measured_w: float, allocated_w: float, cfg: RuleConfig) -> tuple[bool, float, float]:
    """(misses, |measured - allocated| W, allowed W): whether node power misses its allocation."""
    allowed = max(cfg.shortfall_pct / 100.0 * abs(allocated_w), cfg.shortfall_min_w)
    gap = abs(measured_w - allocated_w)
    return gap > allowed, gap, allowed


COMMAND_EVENT_KINDS = {"accepted": "command_accepted", "rejected": "command_rejected",
                       "superseded": "command_superseded", "expired": "command_expired"}


def command_event(status: dict[str, Any]) -> dict[str, Any] | None:
    """The ``fleet.events`` record of a ``dispatch.status`` record (None for ``reallocated``)."""
    kind = COMMAND_EVENT_KINDS.get(status["state"])
    if kind is None:
        return None
    detail = {"requested_w": repr(float(status["requested_w"])), "allocated_w": repr(float(status["allocated_w"])),
              "shortfall_w": repr(float(status["shortfall_w"])), "devices": str(status["devices"]),
              "reason": status.get("reason") or None}
    return event_record(kind, status["command_id"], status["node_path"], status["at"], detail)
