"""Migrations of the temporal asset registry (issue #22), appended to ``vpp.migrations.MIGRATIONS``."""

from __future__ import annotations

__all__ = ["ASSET_MIGRATIONS"]

ASSET_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "100_asset_versions",
        # the temporal registry (issue #22): `assets` stays the CURRENT table the flows load (one row per device,
        # now with its lifecycle status, program enrollments and the device it replaces); every insert or change
        # of a row there writes a version into `asset_versions` in the same transaction (trigger below), with
        # valid_from / valid_to, who changed it and why (transaction-local settings vpp.changed_by, vpp.reason,
        # vpp.valid_from, set by sinks.asset_registry; defaults: the database user, '', now()).
        """
        ALTER TABLE assets ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active'
            CHECK (status IN ('registered', 'commissioned', 'active', 'suspended', 'decommissioned'));
        ALTER TABLE assets ADD COLUMN IF NOT EXISTS programs jsonb;
        ALTER TABLE assets ADD COLUMN IF NOT EXISTS replaces text;
        UPDATE assets SET programs = CASE WHEN enrolled_peak_shaving
            THEN '[{"program": "market"}, {"program": "peak_shaving"}]'::jsonb
            ELSE '[{"program": "market"}]'::jsonb END WHERE programs IS NULL;
        ALTER TABLE assets ALTER COLUMN programs SET DEFAULT '[{"program": "market"}, {"program": "peak_shaving"}]'::jsonb;
        ALTER TABLE assets ALTER COLUMN programs SET NOT NULL;
        -- one notification per statement, not per row (an import of a million rows); listeners re-read by updated_at
        CREATE OR REPLACE FUNCTION assets_notify_statement() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('assets_changed', '');
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        DROP TRIGGER IF EXISTS assets_changed ON assets;
        CREATE TRIGGER assets_changed AFTER INSERT OR UPDATE ON assets
            FOR EACH STATEMENT EXECUTE FUNCTION assets_notify_statement();
        -- the flows' refresh reads rows changed since its last poll: an index, not a scan of a million rows
        CREATE INDEX IF NOT EXISTS assets_updated_at ON assets (updated_at);
        CREATE TABLE IF NOT EXISTS asset_versions (
            device_id        text NOT NULL,
            version          integer NOT NULL,
            site_id          text NOT NULL,
            region_path      text NOT NULL,
            timezone         text NOT NULL,
            capacity_wh      double precision NOT NULL,
            max_charge_w     double precision NOT NULL,
            max_discharge_w  double precision NOT NULL,
            reserve_pct      double precision NOT NULL,
            enrolled_peak_shaving boolean NOT NULL,
            status           text NOT NULL,
            programs         jsonb NOT NULL,
            replaces         text,
            valid_from       timestamptz NOT NULL,
            valid_to         timestamptz,
            changed_by       text NOT NULL,
            reason           text NOT NULL DEFAULT '',
            recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (device_id, version),
            CHECK (valid_to IS NULL OR valid_to >= valid_from)
        );
        CREATE UNIQUE INDEX IF NOT EXISTS asset_versions_current ON asset_versions (device_id) WHERE valid_to IS NULL;
        CREATE INDEX IF NOT EXISTS asset_versions_from ON asset_versions (valid_from);
        CREATE INDEX IF NOT EXISTS asset_versions_replaces ON asset_versions (replaces) WHERE replaces IS NOT NULL;
        CREATE OR REPLACE FUNCTION assets_version() RETURNS trigger AS $$
        DECLARE
            t_from timestamptz := coalesce(nullif(current_setting('vpp.valid_from', true), '')::timestamptz, now());
            next_version integer;
        BEGIN
            IF TG_OP = 'UPDATE' AND (OLD.site_id, OLD.region_path, OLD.timezone, OLD.capacity_wh, OLD.max_charge_w,
                    OLD.max_discharge_w, OLD.reserve_pct, OLD.enrolled_peak_shaving, OLD.status, OLD.programs, OLD.replaces)
                IS NOT DISTINCT FROM (NEW.site_id, NEW.region_path, NEW.timezone, NEW.capacity_wh, NEW.max_charge_w,
                    NEW.max_discharge_w, NEW.reserve_pct, NEW.enrolled_peak_shaving, NEW.status, NEW.programs, NEW.replaces)
            THEN
                RETURN NEW;
            END IF;
            UPDATE asset_versions SET valid_to = greatest(t_from, valid_from)
                WHERE device_id = NEW.device_id AND valid_to IS NULL;
            SELECT coalesce(max(version), 0) + 1 INTO next_version FROM asset_versions WHERE device_id = NEW.device_id;
            INSERT INTO asset_versions (device_id, version, site_id, region_path, timezone, capacity_wh, max_charge_w,
                max_discharge_w, reserve_pct, enrolled_peak_shaving, status, programs, replaces, valid_from, changed_by, reason)
            VALUES (NEW.device_id, next_version, NEW.site_id, NEW.region_path, NEW.timezone, NEW.capacity_wh,
                NEW.max_charge_w, NEW.max_discharge_w, NEW.reserve_pct, NEW.enrolled_peak_shaving, NEW.status,
                NEW.programs, NEW.replaces, t_from,
                coalesce(nullif(current_setting('vpp.changed_by', true), ''), current_user),
                coalesce(current_setting('vpp.reason', true), ''));
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        DROP TRIGGER IF EXISTS assets_version ON assets;
        CREATE TRIGGER assets_version AFTER INSERT OR UPDATE ON assets
            FOR EACH ROW EXECUTE FUNCTION assets_version();
        INSERT INTO asset_versions (device_id, version, site_id, region_path, timezone, capacity_wh, max_charge_w,
            max_discharge_w, reserve_pct, enrolled_peak_shaving, status, programs, replaces, valid_from, changed_by, reason)
        SELECT device_id, 1, site_id, region_path, timezone, capacity_wh, max_charge_w, max_discharge_w, reserve_pct,
            enrolled_peak_shaving, status, programs, replaces, updated_at, current_user, 'registry before versions'
        FROM assets ON CONFLICT DO NOTHING;
        GRANT SELECT ON asset_versions TO vpp_flow, vpp_gateway;
        """,
    ),
)
