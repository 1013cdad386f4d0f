"""A peak-shaving thresholds file that cannot be used is refused at start, as ONE line naming the file,
the table (the node, when there is one), the key and the bad value; never a traceback, never a
threshold taken silently that fails (or shaves wrongly) later."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.peak_shaving.logic import ShavingConfig, load_thresholds
from vpp.config import ConfigError

REPO = Path(__file__).resolve().parents[3]
NODE = '[peak_shaving.nodes."us/ca"]'

#: (TOML, what the one-line error must say after ``<file>: ``).
BAD = [
    # values of the wrong type: TOML strings, booleans (a bool is an int in Python), tables
    pytest.param(f'[peak_shaving]\nhysteresis_w = "5000"\n{NODE}\nthreshold_w = 150000\n',
                 '[peak_shaving] hysteresis_w must be a number of watts, 0 or more, got "5000"', id="default-string"),
    pytest.param(f'{NODE}\nthreshold_w = "150000"\n',
                 f'{NODE} threshold_w must be a positive number of watts, got "150000"', id="threshold-string"),
    pytest.param(f'{NODE}\nthreshold_w = true\n',
                 f'{NODE} threshold_w must be a positive number of watts, got true', id="threshold-bool"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\nsettle_s = false\n',
                 f'{NODE} settle_s must be a whole number of seconds, 0 or more, got false', id="settle-bool"),
    # numbers that are not finite, or not whole where the command's epoch milliseconds need whole seconds
    pytest.param(f'{NODE}\nthreshold_w = nan\n',
                 f'{NODE} threshold_w must be a positive number of watts, got nan', id="threshold-nan"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\nhysteresis_w = nan\n',
                 f'{NODE} hysteresis_w must be a number of watts, 0 or more, got nan', id="hysteresis-nan"),
    pytest.param(f'{NODE}\nthreshold_w = inf\n',
                 f'{NODE} threshold_w must be a positive number of watts, got inf', id="threshold-inf"),
    pytest.param(f'{NODE}\nthreshold_w = {10**400}\n',
                 f'{NODE} threshold_w must be a positive number of watts, got {10**400}', id="threshold-beyond-a-float"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\ncommand_s = inf\n',
                 f'{NODE} command_s must be a whole number of seconds, more than 0, got inf', id="command-inf"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\ncommand_s = 700000\n',
                 f'{NODE} command_s must be at most 604,800 (7 days, the longest command dispatch takes), got 700000',
                 id="command-longer-than-dispatch-takes"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\ncommand_s = 0.5\n',
                 f'{NODE} command_s must be a whole number of seconds, more than 0, got 0.5', id="command-fraction"),
    pytest.param(f'[peak_shaving]\nsettle_s = 2.5\n{NODE}\nthreshold_w = 150000\n',
                 '[peak_shaving] settle_s must be a whole number of seconds, 0 or more, got 2.5', id="default-settle-fraction"),
    # out of range
    pytest.param(f'{NODE}\nthreshold_w = -5000\n',
                 f'{NODE} threshold_w must be a positive number of watts, got -5000', id="threshold-negative"),
    pytest.param(f'{NODE}\nthreshold_w = 0\n',
                 f'{NODE} threshold_w must be a positive number of watts, got 0', id="threshold-zero"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\ncommand_s = 0\n',
                 f'{NODE} command_s must be a whole number of seconds, more than 0, got 0', id="command-zero"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\ndeadband_w = -1\n',
                 f'{NODE} deadband_w must be a number of watts, 0 or more, got -1', id="deadband-negative"),
    # released below threshold - hysteresis: a hysteresis >= the threshold never releases the node
    pytest.param(f'{NODE}\nthreshold_w = 1000\nhysteresis_w = 900000\n',
                 f'{NODE} hysteresis_w 900000 must be less than threshold_w 1000: the node is released when its '
                 'import falls below threshold_w - hysteresis_w, so it would never be released', id="hysteresis-above"),
    pytest.param(f'[peak_shaving]\nhysteresis_w = 5000\n{NODE}\nthreshold_w = 5000\n',
                 f'{NODE} hysteresis_w 5000 (from [peak_shaving]) must be less than threshold_w 5000', id="default-hysteresis-equal"),
    pytest.param(f'{NODE}\nthreshold_w = 800\n',
                 f'{NODE} hysteresis_w 1000.0 (the default) must be less than threshold_w 800', id="built-in-hysteresis"),
    # keys that mean nothing: a typo is not silently ignored
    pytest.param(f'{NODE}\nthreshold_w = 150000\nhysteresis = 5\n',
                 f'{NODE} unknown key hysteresis (did you mean hysteresis_w?)', id="node-typo"),
    pytest.param(f'[peak_shaving]\nhysterisis_w = 5000\n{NODE}\nthreshold_w = 150000\n',
                 '[peak_shaving] unknown key hysterisis_w (did you mean hysteresis_w?)', id="default-typo"),
    pytest.param(f'[peak_shaving]\nthreshold_w = 5000\n{NODE}\nthreshold_w = 150000\n',
                 '[peak_shaving] unknown key threshold_w', id="threshold-as-default"),
    pytest.param(f'{NODE}\nthreshold_w = 150000\n"x\\ny" = 1\n',
                 f'{NODE} unknown key "x\\ny"', id="key-with-newline-stays-one-line"),
    # the shape of the tables
    pytest.param('[peak_shaving.nodes]\n"a/b" = 5\n',
                 '[peak_shaving.nodes."a/b"] must be a table with threshold_w, got 5', id="node-not-a-table"),
    pytest.param('[peak_shaving]\nnodes = 5\n',
                 '[peak_shaving] nodes must be tables [peak_shaving.nodes."<node path>"], got 5', id="nodes-not-a-table"),
    pytest.param('[peak_shaving.nodes."us/ca"]\nhysteresis_w = 1\n',
                 f'{NODE} needs threshold_w', id="threshold-missing"),
    # node keys: "a/b" and "a/b/" are the same node; a key that is no node path matches no aggregate
    pytest.param('[peak_shaving.nodes."a/b"]\nthreshold_w = 150000\n[peak_shaving.nodes."a/b/"]\nthreshold_w = 90000\n',
                 '[peak_shaving.nodes."a/b/"] is the same node as [peak_shaving.nodes."a/b"] ("a/b"): give each node one table',
                 id="duplicate-node"),
    pytest.param('[peak_shaving.nodes."/"]\nthreshold_w = 150000\n',
                 '[peak_shaving.nodes."/"] is not a node path', id="empty-node-path"),
    pytest.param('[peak_shaving.nodes."us//ca"]\nthreshold_w = 150000\n',
                 '[peak_shaving.nodes."us//ca"] is not a node path', id="empty-segment"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "peak-shaving.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("toml, says", BAD)
def test_load_thresholds_refuses_a_bad_file_naming_file_node_key_and_value(tmp_path, toml, says):
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_thresholds(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {says}"), message


def _without_services(environ) -> dict[str, str]:
    """``environ`` without any ``VPP_``/``BYTEWAX_`` variable, its broker and registry where nothing listens:
    reading the file must fail before the flow needs either."""
    env = {k: v for k, v in environ.items() if not k.startswith(("VPP_", "BYTEWAX_"))}
    return {**env, "VPP_BROKER": "127.0.0.1:9", "VPP_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9"}


RUN = ["run", "peak-shaving", "--config", "peak-shaving.toml"]


@pytest.mark.parametrize("toml, says", BAD)
def test_vpp_run_peak_shaving_refuses_a_bad_file_in_one_line_before_connecting_anywhere(tmp_path, monkeypatch, capfd,
                                                                                        toml, says):
    from cli.main import main
    from vpp import observability

    write(tmp_path, toml)
    env = _without_services(os.environ)
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    # `vpp run` sets the process-global OpenTelemetry providers once: keep this test process's unset
    monkeypatch.setitem(observability._configured, "service", "test")
    code = main([*RUN, "--state-dir", str(tmp_path / "state")])
    out, err = capfd.readouterr()  # file descriptors: librdkafka's own lines would show too
    assert code != 0 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vpp: error: peak-shaving.toml: {says}"), err


def test_the_vpp_process_refusing_a_bad_file_prints_that_one_line_and_nothing_else(tmp_path):
    """The same through ``python -m cli`` in a process of its own: nothing else on its stdout or stderr."""
    (case,) = [p for p in BAD if p.id == "key-with-newline-stays-one-line"]
    toml, says = case.values
    write(tmp_path, toml)
    done = subprocess.run([sys.executable, "-m", "cli", *RUN, "--state-dir", str(tmp_path / "state")], cwd=tmp_path,
                          env={**_without_services(os.environ), "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vpp: error: peak-shaving.toml: {says}"), done.stderr


def test_whole_seconds_may_be_written_as_floats_and_a_hysteresis_just_below_the_threshold_is_fine(tmp_path):
    path = write(tmp_path, f'[peak_shaving]\nsettle_s = 30.0\n{NODE}\nthreshold_w = 1000\nhysteresis_w = 999.5\ncommand_s = 600.0\n')
    (config,) = load_thresholds(path).values()
    assert config == ShavingConfig(1000, hysteresis_w=999.5, command_s=600, settle_s=30)
    assert type(config.command_s) is int and type(config.settle_s) is int


def test_the_shipped_example_is_accepted():
    got = load_thresholds(REPO / "deploy/overlays/peak-shaving/peak-shaving.toml")
    assert set(got) == {"us/ca/pge", "us/tx/oncor"}


@pytest.mark.parametrize("kwargs, says", [
    ({"threshold_w": float("nan")}, "threshold_w must be a positive number of watts, got nan"),
    ({"threshold_w": True}, "threshold_w must be a positive number of watts, got true"),
    ({"threshold_w": 100_000, "command_s": 0.5}, "command_s must be a whole number of seconds, more than 0, got 0.5"),
    ({"threshold_w": 100_000, "settle_s": -1}, "settle_s must be a whole number of seconds, 0 or more, got -1"),
    ({"threshold_w": 1_000, "hysteresis_w": 1_000}, "hysteresis_w 1000 must be less than threshold_w 1000"),
])
def test_a_config_built_in_code_is_checked_by_the_same_rules(kwargs, says):
    with pytest.raises(ValueError, match="^" + re.escape(f"peak shaving config: {says}")):
        ShavingConfig(**kwargs)
