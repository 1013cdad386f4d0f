"""Settings: defaults < local stack < TOML file < VPP_* environment, typed, with clear errors."""

from __future__ import annotations

import json

import pytest

from vpp.config import DEFAULT_PARTITIONS, ConfigError, Settings


def test_defaults_need_no_configuration(tmp_path):
    s = Settings.load(state_dir=tmp_path, environ={})
    assert s.window_s == 10 and s.lateness_s == 5 and s.staleness_s == 60
    assert dict(s.partitions) == dict(DEFAULT_PARTITIONS)


def test_the_local_stack_addresses_come_from_stack_json(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({"broker": "127.0.0.1:1", "schema_registry": "http://127.0.0.1:2",
                                                     "postgres": "postgresql://x@127.0.0.1:3/vpp",
                                                     "timeseries": "http://127.0.0.1:4"}))
    s = Settings.load(state_dir=tmp_path, environ={})
    assert (s.broker, s.schema_registry_url, s.postgres_dsn, s.timeseries_url) == (
        "127.0.0.1:1", "http://127.0.0.1:2", "postgresql://x@127.0.0.1:3/vpp", "http://127.0.0.1:4")


def test_toml_then_environment_win_in_that_order(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({"broker": "127.0.0.1:1"}))
    toml = tmp_path / "vpp.toml"
    toml.write_text('broker = "kafka:9092"\nwindow_s = 30\n[partitions]\n"telemetry.raw" = 16\n')
    s = Settings.load(state_dir=tmp_path, config_file=toml, environ={"VPP_WINDOW_S": "20"})
    assert s.broker == "kafka:9092" and s.window_s == 20 and s.partitions["telemetry.raw"] == 16
    assert s.partitions["telemetry.dlq"] == DEFAULT_PARTITIONS["telemetry.dlq"]
    s = Settings.load(state_dir=tmp_path, environ={"VPP_CONFIG": str(toml), "VPP_PARTITIONS": "telemetry.raw=8"})
    assert s.partitions["telemetry.raw"] == 8


@pytest.mark.parametrize("environ, message", [
    ({"VPP_WINDOW_S": "ten"}, "setting 'window_s' = 'ten' is not a int"),
    ({"VPP_PARTITIONS": "telemetry.raw"}, "must look like topic=COUNT"),
])
def test_bad_values_say_which_setting(tmp_path, environ, message):
    with pytest.raises(ConfigError, match=message):
        Settings.load(state_dir=tmp_path, environ=environ)


def test_an_unknown_setting_in_the_file_is_refused(tmp_path):
    toml = tmp_path / "vpp.toml"
    toml.write_text("brokers = 'x'\n")
    with pytest.raises(ConfigError, match="unknown setting 'brokers'"):
        Settings.load(state_dir=tmp_path, config_file=toml, environ={})


def test_topics_carry_the_deployment_prefix():
    assert Settings(topic_prefix="prod.").topic("telemetry.raw") == "prod.telemetry.raw"
    with pytest.raises(ConfigError, match="unknown topic"):
        Settings().topic("telemetry.rwa")
