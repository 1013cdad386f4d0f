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
    ({"VPP_WINDOW_S": "ten"}, "setting 'window_s' = 'ten' is not an integer$"),
    ({"VPP_WINDOW_S": "1.5"}, "setting 'window_s' = '1.5' is not an integer$"),
    ({"VPP_ASSETS_REFRESH_S": "often"}, "setting 'assets_refresh_s' = 'often' is not a number$"),
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


@pytest.mark.parametrize("where", ["environment", "file"])
def test_a_replaced_setting_is_refused_with_what_to_set_instead(tmp_path, where):
    toml = tmp_path / "vpp.toml"
    toml.write_text("autobidder_horizon = 288\n" if where == "file" else "")
    environ = {"VPP_AUTOBIDDER_HORIZON": "288"} if where == "environment" else {}
    with pytest.raises(ConfigError, match=r"'autobidder_horizon' .* replaced: set autobidder_horizon_s .* in seconds"):
        Settings.load(state_dir=tmp_path, config_file=toml, environ=environ)


def test_topics_carry_the_deployment_prefix():
    assert Settings(topic_prefix="prod.").topic("telemetry.raw") == "prod.telemetry.raw"
    with pytest.raises(ConfigError, match="unknown topic"):
        Settings().topic("telemetry.rwa")


@pytest.mark.parametrize("text, message", [
    ("window_s = [\n", "config file .*vpp.toml is not valid TOML: "),
    ("unknown_key = 5\n", "unknown setting 'unknown_key'"),
    ("window_s = 2.5\n", "setting 'window_s' = 2.5 is not an integer"),
    ("window_s = true\n", "setting 'window_s' = True is not an integer"),
    ("partitions = 4\n", "partitions = 4 must be a table"),
    ('[partitions]\n"telemetry.raw" = "many"\n', "partitions of 'telemetry.raw' = 'many' is not an integer"),
])
def test_a_config_file_that_cannot_be_used_says_why(tmp_path, text, message):
    toml = tmp_path / "vpp.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Settings.load(state_dir=tmp_path, config_file=toml, environ={})


def test_a_missing_or_binary_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.toml: No such file or directory$"):
        Settings.load(state_dir=tmp_path, config_file=tmp_path / "nope.toml", environ={})
    binary = tmp_path / "vpp.toml"
    binary.write_bytes(b"\xff\xfe\x00window")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        Settings.load(state_dir=tmp_path, config_file=binary, environ={})


@pytest.mark.parametrize("name, value, rule", [
    ("window_s", "0", "must be more than 0 s"),
    ("window_s", "-5", "must be more than 0 s"),
    ("lateness_s", "-100", "must be 0 s or more"),
    ("staleness_s", "0", "must be more than 0 s"),
    ("dedup_horizon_s", "-1", "must be 0 .* or more"),
    ("assets_refresh_s", "0", "must be more than 0 s"),
    ("assets_refresh_s", "nan", "must be more than 0 s"),
    ("snapshot_interval_s", "0", "must be more than 0 s"),
    ("autobidder_step_timeout_s", "-1", "must be more than 0 s"),
    ("autobidder_step_timeout_s", "inf", "must be more than 0 s"),
    ("autobidder_state_wait_s", "-1", "must be 0 s .* or more"),
    ("autobidder_horizon_s", "0", "must be more than 0 s"),
    ("market_interval_s", "30", "must be at least 60 s"),
    ("optimize_time_limit_s", "-1", "must be 0 .* or more"),
    ("setpoint_resend_s", "-60", "must be 0 .* or more"),
])
def test_a_value_that_makes_no_sense_is_refused_naming_setting_and_value(tmp_path, name, value, rule):
    with pytest.raises(ConfigError, match=f"setting '{name}' = {value!s}(\\.0)? {rule}"):
        Settings.load(state_dir=tmp_path, environ={f"VPP_{name.upper()}": value})


def test_zero_is_accepted_where_it_means_none_or_off(tmp_path):
    zeros = ("lateness_s", "dedup_horizon_s", "autobidder_state_wait_s", "optimize_time_limit_s", "setpoint_resend_s")
    s = Settings.load(state_dir=tmp_path, environ={f"VPP_{name.upper()}": "0" for name in zeros})
    assert all(getattr(s, name) == 0 for name in zeros)


def test_settings_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="setting 'window_s' = 0 must be more than 0 s"):
        Settings().replace(window_s=0)
    with pytest.raises(ConfigError, match="partitions of 'telemetry.raw' = 0 must be a whole number of at least 1"):
        Settings.load(environ={"VPP_PARTITIONS": "telemetry.raw=0"}, state_dir="/nonexistent")


@pytest.mark.parametrize("environ, message", [
    ({"VPP_MARKET_INTERVAL_S": "600"}, None),                          # 10 minutes divide a day
    ({"VPP_MARKET_INTERVAL_S": "3600"}, None),
    ({"VPP_MARKET_INTERVAL_S": "90"}, "'market_interval_s' = 90 must be a whole number of minutes"),
    ({"VPP_MARKET_INTERVAL_S": "4200"}, "'market_interval_s' = 4200 must be a whole number of minutes that divides a day"),
    ({"VPP_MARKET_INTERVAL_S": "3600", "VPP_AUTOBIDDER_HORIZON_S": "1800"}, "'autobidder_horizon_s' = 1800 is shorter"),
])
def test_the_market_interval_divides_a_day_and_the_horizon_holds_one(tmp_path, environ, message):
    if message is None:
        assert Settings.load(state_dir=tmp_path, environ=environ).market_interval_s == int(environ["VPP_MARKET_INTERVAL_S"])
    else:
        with pytest.raises(ConfigError, match=message):
            Settings.load(state_dir=tmp_path, environ=environ)


def test_the_optimize_solver_is_one_the_worker_has():
    from models.optimize import SOLVERS
    from vpp.config import OPTIMIZE_SOLVERS

    assert OPTIMIZE_SOLVERS == SOLVERS
    with pytest.raises(ConfigError, match="setting 'optimize_solver' = 'gurobi' is not one of cbc, highs"):
        Settings.load(state_dir="/nonexistent", environ={"VPP_OPTIMIZE_SOLVER": "gurobi"})


def test_a_damaged_stack_json_is_a_config_error(tmp_path):
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the local stack's .*stack.json"):
        Settings.load(state_dir=tmp_path, environ={})
