"""Forecasting and optimization models for market participation (spec fleet.md section 3)."""
