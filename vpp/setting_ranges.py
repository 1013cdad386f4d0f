"""The values that make sense for each numeric setting of ``vpp.config.Settings`` (checked when settings are read)."""

from __future__ import annotations

from typing import Mapping

__all__ = ["_RANGES", "market_interval_problem"]

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
    "autobidder_horizon_s": (0, False, "must be more than 0 s"),
    "market_interval_s": (60, True, "must be at least 60 s (one minute)"),
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


def market_interval_problem(market_interval_s: int, horizon_s: int) -> str | None:
    """What is wrong with a market interval and the autobidder's horizon together, or None.

    An interval is a whole number of minutes that divides a day (5, 15, 30, 60 minutes...): the
    forecasters put intervals on days. The horizon holds at least one interval.
    """
    if market_interval_s % 60 or 86_400 % market_interval_s:
        return (f"setting 'market_interval_s' = {market_interval_s!r} must be a whole number of minutes that divides "
                "a day, e.g. 300 (5 min), 900 (15 min), 1800 (30 min) or 3600 (1 h)")
    if horizon_s < market_interval_s:
        return (f"setting 'autobidder_horizon_s' = {horizon_s!r} is shorter than one market interval "
                f"(market_interval_s = {market_interval_s}): plan at least one interval ahead, e.g. 86400 (a day)")
    return None
