"""The project's PostgreSQL schema (asset registry, command and control, DLQ) and its migration.

Migrations are append-only: a new change is a new entry in ``MIGRATIONS``;
``migrate(dsn)`` applies those not yet recorded in ``schema_migrations``.
"""

from __future__ import annotations

import psycopg

__all__ = ["MIGRATIONS", "migrate", "connect"]

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "001_assets",
        """
        CREATE TABLE IF NOT EXISTS assets (
            device_id        text PRIMARY KEY,
            site_id          text NOT NULL,
            region_path      text NOT NULL,
            timezone         text NOT NULL,
            capacity_wh      double precision NOT NULL CHECK (capacity_wh > 0),
            max_charge_w     double precision NOT NULL CHECK (max_charge_w >= 0),
            max_discharge_w  double precision NOT NULL CHECK (max_discharge_w >= 0),
            reserve_pct      double precision NOT NULL CHECK (reserve_pct >= 0 AND reserve_pct <= 100),
            enrolled_peak_shaving boolean NOT NULL DEFAULT true,
            updated_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE OR REPLACE FUNCTION assets_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('assets_changed', NEW.device_id);
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        DROP TRIGGER IF EXISTS assets_changed ON assets;
        CREATE TRIGGER assets_changed AFTER INSERT OR UPDATE ON assets
            FOR EACH ROW EXECUTE FUNCTION assets_notify();
        """,
    ),
    (
        "002_dlq",
        """
        CREATE TABLE IF NOT EXISTS telemetry_dlq (
            id               bigserial PRIMARY KEY,
            source_topic     text NOT NULL,
            source_partition integer NOT NULL,
            source_offset    bigint NOT NULL,
            reason           text NOT NULL,
            detail           text NOT NULL,
            raw              bytea NOT NULL,
            device_id        text,
            received_at      timestamptz NOT NULL DEFAULT now(),
            UNIQUE (source_topic, source_partition, source_offset)
        );
        CREATE INDEX IF NOT EXISTS telemetry_dlq_reason ON telemetry_dlq (reason);
        """,
    ),
    (
        "004_dispatch",
        """
        CREATE TABLE IF NOT EXISTS dispatch_commands (
            command_id   text PRIMARY KEY,
            node_path    text NOT NULL,
            target_w     double precision NOT NULL,
            start_at     timestamptz NOT NULL,
            end_at       timestamptz NOT NULL,
            issued_by    text NOT NULL,
            program      text,
            received_at  timestamptz,
            stored_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS dispatch_commands_node ON dispatch_commands (node_path, start_at);
        CREATE TABLE IF NOT EXISTS device_setpoints (
            command_id   text NOT NULL,
            device_id    text NOT NULL,
            start_at     timestamptz NOT NULL,
            end_at       timestamptz NOT NULL,
            node_path    text NOT NULL,
            setpoint_w   double precision NOT NULL,
            stored_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (command_id, device_id, start_at)
        );
        CREATE INDEX IF NOT EXISTS device_setpoints_device ON device_setpoints (device_id, start_at);
        CREATE TABLE IF NOT EXISTS dispatch_statuses (
            command_id   text NOT NULL,
            at           timestamptz NOT NULL,
            state        text NOT NULL CHECK (state IN ('accepted', 'reallocated', 'rejected', 'superseded', 'expired')),
            node_path    text NOT NULL,
            requested_w  double precision NOT NULL,
            allocated_w  double precision NOT NULL,
            shortfall_w  double precision NOT NULL,
            devices      integer NOT NULL,
            reason       text,
            stored_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (command_id, at, state)
        );
        """,
    ),
    (
        "003_node_state",
        """
        CREATE TABLE IF NOT EXISTS node_state (
            node_path              text PRIMARY KEY,
            depth                  integer NOT NULL,
            window_start           timestamptz NOT NULL,
            window_end             timestamptz NOT NULL,
            devices_known          integer NOT NULL,
            devices_reporting      integer NOT NULL,
            estimated_devices      integer NOT NULL,
            battery_w              double precision NOT NULL,
            solar_w                double precision NOT NULL,
            load_w                 double precision NOT NULL,
            grid_w                 double precision NOT NULL,
            energy_available_wh    double precision NOT NULL,
            headroom_wh            double precision NOT NULL,
            discharge_available_w  double precision NOT NULL,
            charge_available_w     double precision NOT NULL,
            capacity_wh            double precision NOT NULL,
            soc_pct                double precision,
            late                   integer NOT NULL,
            updated_at             timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS node_state_path_prefix ON node_state (node_path text_pattern_ops);
        CREATE INDEX IF NOT EXISTS node_state_depth ON node_state (depth);
        """,
    ),
    (
        "005_autobidder",
        """
        CREATE TABLE IF NOT EXISTS autobidder_facts (
            node_path       text NOT NULL,
            interval_start  timestamptz NOT NULL,
            step            text NOT NULL,
            fact            jsonb NOT NULL,
            at              timestamptz NOT NULL,
            stored_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (node_path, interval_start, step)
        );
        CREATE TABLE IF NOT EXISTS autobidder_workflows (
            node_path       text NOT NULL,
            interval_start  timestamptz NOT NULL,
            status          text NOT NULL,
            bid_id          text NOT NULL,
            reason          text,
            at              timestamptz NOT NULL,
            stored_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (node_path, interval_start)
        );
        """,
    ),
    (
        "006_dispatch_command_unrepresentable_period",
        # a rejected command may name a time no timestamp holds (its status says which); NULL then
        """
        ALTER TABLE dispatch_commands ALTER COLUMN start_at DROP NOT NULL;
        ALTER TABLE dispatch_commands ALTER COLUMN end_at DROP NOT NULL;
        """,
    ),
    (
        "060_edge",
        # the device edge: certificates the platform CA issued (vpp pki), gateway sessions, command acks
        """
        CREATE TABLE IF NOT EXISTS device_certificates (
            serial        text PRIMARY KEY,
            device_id     text NOT NULL,
            fingerprint_sha256 text NOT NULL UNIQUE,
            not_before    timestamptz NOT NULL,
            not_after     timestamptz NOT NULL,
            status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'superseded', 'revoked')),
            issued_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            superseded_at timestamptz,
            revoked_at    timestamptz,
            reason        text,
            updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX IF NOT EXISTS device_certificates_device ON device_certificates (device_id, issued_at);
        CREATE INDEX IF NOT EXISTS device_certificates_updated ON device_certificates (updated_at);
        CREATE OR REPLACE FUNCTION device_certificates_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('device_certificates_changed', NEW.serial);
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        DROP TRIGGER IF EXISTS device_certificates_changed ON device_certificates;
        CREATE TRIGGER device_certificates_changed AFTER UPDATE ON device_certificates
            FOR EACH ROW EXECUTE FUNCTION device_certificates_notify();
        CREATE TABLE IF NOT EXISTS gateway_sessions (
            id              bigserial PRIMARY KEY,
            device_id       text NOT NULL,
            cert_serial     text NOT NULL,
            gateway         text NOT NULL,
            remote          text,
            connected_at    timestamptz NOT NULL DEFAULT now(),
            disconnected_at timestamptz,
            close_code      integer,
            close_reason    text
        );
        CREATE INDEX IF NOT EXISTS gateway_sessions_device ON gateway_sessions (device_id, connected_at);
        CREATE TABLE IF NOT EXISTS device_command_acks (
            command_id   text NOT NULL,
            device_id    text NOT NULL,
            start_at     timestamptz NOT NULL,
            status       text NOT NULL CHECK (status IN ('applied', 'rejected')),
            reason       text,
            acked_at     timestamptz NOT NULL,
            cert_serial  text NOT NULL,
            stored_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (command_id, device_id, start_at)
        );
        """,
    ),
)


def connect(dsn: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(dsn, **kwargs)


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("SELECT pg_advisory_xact_lock(424242)")
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for name, ddl in MIGRATIONS:
            if name in done:
                continue
            conn.execute(ddl)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
        conn.commit()
    return applied
