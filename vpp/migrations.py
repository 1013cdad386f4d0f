"""The project's PostgreSQL schema, one append-only entry per change: ``(name, DDL)``, applied in this order by
``vpp.db.migrate``. A change that has landed is never edited: add a new entry."""

from __future__ import annotations

from vpp.migrations_assets import ASSET_MIGRATIONS

__all__ = ["MIGRATIONS"]

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
        "007_dlq_source_identity",
        # a dead letter is one message: its position AND its content (hash) and Kafka timestamp, so that after a
        # topic is recreated, new dead letters at reused offsets are stored instead of vanishing as "duplicates"
        """
        ALTER TABLE telemetry_dlq ADD COLUMN IF NOT EXISTS source_timestamp_ms bigint;
        ALTER TABLE telemetry_dlq ADD COLUMN IF NOT EXISTS raw_length bigint;
        ALTER TABLE telemetry_dlq ADD COLUMN IF NOT EXISTS raw_sha256 text;
        ALTER TABLE telemetry_dlq ADD COLUMN IF NOT EXISTS raw_truncated boolean NOT NULL DEFAULT false;
        UPDATE telemetry_dlq SET raw_length = length(raw), raw_sha256 = encode(sha256(raw), 'hex') WHERE raw_sha256 IS NULL;
        ALTER TABLE telemetry_dlq ALTER COLUMN raw_sha256 SET NOT NULL;
        CREATE OR REPLACE FUNCTION telemetry_dlq_identity() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN  -- a row written without them (an older writer) is identified by its stored bytes
            NEW.raw_length := coalesce(NEW.raw_length, length(NEW.raw));
            NEW.raw_sha256 := coalesce(NEW.raw_sha256, encode(sha256(NEW.raw), 'hex'));
            RETURN NEW;
        END $$;
        DROP TRIGGER IF EXISTS telemetry_dlq_identity ON telemetry_dlq;
        CREATE TRIGGER telemetry_dlq_identity BEFORE INSERT ON telemetry_dlq
            FOR EACH ROW EXECUTE FUNCTION telemetry_dlq_identity();
        ALTER TABLE telemetry_dlq DROP CONSTRAINT IF EXISTS telemetry_dlq_source_topic_source_partition_source_offset_key;
        CREATE UNIQUE INDEX IF NOT EXISTS telemetry_dlq_message ON telemetry_dlq
            (source_topic, source_partition, source_offset, raw_sha256, (coalesce(source_timestamp_ms, -1)));
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
    (
        "070_alerts",
        # spec/alerts.md: one row per alert (its current state), every transition and operator action, the
        # silences of an identity (rule, subject) that apply to its future alerts too, and events once each
        """
        CREATE TABLE IF NOT EXISTS alerts (
            alert_id        text PRIMARY KEY,
            rule            text NOT NULL,
            subject         text NOT NULL,
            node_path       text NOT NULL,
            state           text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved', 'dropped')),
            state_rank      smallint NOT NULL,
            severity        text NOT NULL,
            value           double precision NOT NULL,
            threshold       double precision NOT NULL,
            started_at      timestamptz NOT NULL,
            fired_at        timestamptz,
            ended_at        timestamptz,
            changed_at      timestamptz NOT NULL,
            summary         text NOT NULL,
            acked_by        text,
            acked_at        timestamptz,
            silenced_until  timestamptz,
            stored_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS alerts_identity ON alerts (rule, subject, started_at);
        CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, changed_at);
        CREATE INDEX IF NOT EXISTS alerts_node ON alerts (node_path text_pattern_ops);
        CREATE TABLE IF NOT EXISTS alert_events (
            id           bigserial PRIMARY KEY,
            alert_id     text NOT NULL REFERENCES alerts (alert_id),
            kind         text NOT NULL CHECK (kind IN ('pending', 'firing', 'resolved', 'dropped', 'ack', 'silence')),
            at           timestamptz NOT NULL,
            actor        text,
            detail       text,
            recorded_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX IF NOT EXISTS alert_events_transition ON alert_events (alert_id, kind)
            WHERE kind IN ('pending', 'firing', 'resolved', 'dropped');
        CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, id);
        CREATE TABLE IF NOT EXISTS alert_silences (
            id           bigserial PRIMARY KEY,
            rule         text NOT NULL,
            subject      text NOT NULL,
            until        timestamptz NOT NULL,
            created_by   text,
            created_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS alert_silences_identity ON alert_silences (rule, subject, until);
        CREATE TABLE IF NOT EXISTS events (
            event_id    text PRIMARY KEY,
            kind        text NOT NULL,
            subject     text NOT NULL,
            node_path   text NOT NULL,
            at          timestamptz NOT NULL,
            detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
            stored_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS events_at ON events (at);
        CREATE INDEX IF NOT EXISTS events_subject ON events (subject, at);
        """,
    ),
    (
        "080_operator",
        # users and roles, API tokens (only their SHA-256 hashes), login attempts, the append-only audit log
        # (the console reads the alerts tables of 070_alerts and records acks and silences there)
        """
        CREATE TABLE IF NOT EXISTS users (
            name           text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
            role           text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            password_hash  text NOT NULL,
            disabled       boolean NOT NULL DEFAULT false,
            created_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS api_tokens (
            token_id     bigserial PRIMARY KEY,
            user_name    text NOT NULL REFERENCES users (name),
            kind         text NOT NULL CHECK (kind IN ('api', 'login', 'session')),
            token_sha256 text NOT NULL UNIQUE,
            created_at   timestamptz NOT NULL DEFAULT now(),
            expires_at   timestamptz,
            revoked_at   timestamptz
        );
        CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (user_name);
        CREATE TABLE IF NOT EXISTS login_attempts (
            id         bigserial PRIMARY KEY,
            user_name  text NOT NULL,
            address    text NOT NULL,
            ok         boolean NOT NULL,
            at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS login_attempts_user ON login_attempts (user_name, at);
        CREATE INDEX IF NOT EXISTS login_attempts_address ON login_attempts (address, at);
        CREATE TABLE IF NOT EXISTS audit_log (
            id         bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor      text NOT NULL,
            action     text NOT NULL,
            target     text,
            address    text NOT NULL,
            outcome    text NOT NULL,
            detail     jsonb NOT NULL DEFAULT '{}'::jsonb
        );
        CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
        CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
        END $$ LANGUAGE plpgsql;
        DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
        DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
        """,
    ),
    (
        "090_roles",
        # least privilege: the roles exist without LOGIN; whoever deploys gives them one (and a password, a
        # SCRAM secret): `ALTER ROLE vpp_flow LOGIN PASSWORD '...'` (the local stack does). Migrations run as
        # the owner. A migration adding a flow table grants vpp_flow what it needs on it.
        """
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vpp_flow') THEN CREATE ROLE vpp_flow NOLOGIN; END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vpp_registry') THEN CREATE ROLE vpp_registry NOLOGIN; END IF;
        END $$;
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
        REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
        GRANT USAGE ON SCHEMA public TO vpp_flow, vpp_registry;
        GRANT CREATE ON SCHEMA public TO vpp_registry;
        GRANT SELECT ON assets TO vpp_flow;
        GRANT SELECT, INSERT ON telemetry_dlq TO vpp_flow;
        GRANT SELECT, INSERT, UPDATE ON dispatch_commands, device_setpoints, dispatch_statuses, node_state,
            autobidder_facts, autobidder_workflows TO vpp_flow;
        GRANT USAGE ON SEQUENCE telemetry_dlq_id_seq TO vpp_flow;
        -- the store-alerts flow: alerts (their current state), their transitions once each, events once each
        GRANT SELECT, INSERT, UPDATE ON alerts, alert_events, events TO vpp_flow;
        GRANT SELECT ON alert_silences TO vpp_flow;
        GRANT USAGE ON SEQUENCE alert_events_id_seq TO vpp_flow;
        -- the device gateway: the registry and certificates it checks (marking superseded ones), its sessions, acks
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vpp_gateway') THEN CREATE ROLE vpp_gateway NOLOGIN; END IF;
        END $$;
        GRANT USAGE ON SCHEMA public TO vpp_gateway;
        GRANT SELECT ON assets, device_setpoints TO vpp_gateway;
        GRANT SELECT, UPDATE ON device_certificates TO vpp_gateway;
        GRANT SELECT, INSERT, UPDATE ON gateway_sessions, device_command_acks TO vpp_gateway;
        GRANT USAGE ON SEQUENCE gateway_sessions_id_seq TO vpp_gateway;
        """,
    ),
) + ASSET_MIGRATIONS
