"""Flow ``alerts``: rules over telemetry, aggregates, dead letters and dispatch status -> fleet.alerts + fleet.events."""
