"""The values that make sense for each numeric setting of ``vpp.config.Settings`` (checked when settings are read)."""

from __future__ import annotations

from typing import Mapping

__all__ = ["_RANGES"]

#: Numeric settings and the values that make sense for them: ``(lowest, whether lowest itself is allowed,
#: what the error says)``. A window, a timeout or a refresh period of 0 s (or less) means nothing; a
#: lateness may be 0, and so may a bound or period whose 0 means "none" or "never". Nothing is negative.
_RANGES: Mapping[str, tuple[float, bool, str]] = {
    "dedup_horizon_s": (0, True, "must be 0 (no duplicate memory) or more"),
    "assets_refresh_s": (0, False, "must be more than 0 s"),
    "window_s": (0, False, "must be more than 0 s"),
    "lateness_s": (0, True, "must be 0 s or more"),
    "staleness_s": (0, False, "must be more than 0 s"),
    "snapshot_interval_s": (0, False, "must be more than 0 s"),
    "autobidder_step_timeout_s": (0, False, "must be more than 0 s"),
    "autobidder_state_wait_s": (0, True, "must be 0 s (do not wait) or more"),
    "autobidder_horizon": (1, True, "must be at least 1 interval"),
    "optimize_time_limit_s": (0, True, "must be 0 (no bound) or more"),
    "setpoint_resend_s": (0, True, "must be 0 (never resend) or more"),
    "timeseries_max_future_s": (0, False, "must be more than 0 s"),
    "timeseries_max_age_s": (0, False, "must be more than 0 s"),
    "max_bid_w": (0, False, "must be more than 0 W"),
    "alert_tick_s": (0, False, "must be more than 0 s"),
    "alert_offline_after_s": (0, False, "must be more than 0 s"),
    "alert_forget_after_s": (0, False, "must be more than 0 s"),
    "alert_offline_resolve_readings": (1, True, "must be at least 1 reading"),
    "alert_low_soc_raise_pct": (0, True, "must be 0 % or more"),
    "alert_low_soc_clear_pct": (0, True, "must be 0 % or more"),
    "alert_low_soc_for_s": (0, True, "must be 0 s or more"),
    "alert_islanded_for_s": (0, True, "must be 0 s or more"),
    "alert_islanded_clear_for_s": (0, True, "must be 0 s or more"),
    "alert_outage_raise_ratio": (0, False, "must be more than 0"),
    "alert_outage_clear_ratio": (0, True, "must be 0 or more"),
    "alert_outage_for_s": (0, True, "must be 0 s or more"),
    "alert_outage_clear_for_s": (0, True, "must be 0 s or more"),
    "alert_dlq_window_s": (0, False, "must be more than 0 s"),
    "alert_dlq_baseline_s": (0, False, "must be more than 0 s"),
    "alert_dlq_factor": (0, True, "must be 0 or more"),
    "alert_dlq_min": (0, True, "must be 0 or more"),
    "alert_dlq_clear_for_s": (0, True, "must be 0 s or more"),
    "alert_shortfall_pct": (0, True, "must be 0 % or more"),
    "alert_shortfall_min_w": (0, True, "must be 0 W or more"),
    "alert_shortfall_windows": (1, True, "must be at least 1 window"),
    "gateway_port": (0, True, "must be 0 (any free port) or more"),
    "gateway_max_frame_bytes": (1, True, "must be at least 1 byte"),
    "gateway_max_readings": (1, True, "must be at least 1 reading"),
    "gateway_max_frames_per_s": (0, False, "must be more than 0"),
    "gateway_window": (1, True, "must be at least 1 frame"),
    "gateway_refresh_s": (0, False, "must be more than 0 s"),
    "gateway_ping_s": (0, False, "must be more than 0 s"),
}
