"""Flow ``store-alerts``: fleet.alerts + fleet.events -> PostgreSQL + the time-series store (+ the alert webhook)."""
