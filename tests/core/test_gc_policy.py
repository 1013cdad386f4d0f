"""A flow process collects garbage less often than CPython's default (see ``vpp.gc_policy``)."""

import subprocess
import sys


def test_a_flow_process_freezes_its_startup_objects_and_collects_less_often():
    code = ("import gc; from vpp.gc_policy import tune_for_streaming, STREAMING_THRESHOLDS; "
            "default = gc.get_threshold(); tune_for_streaming(); "
            "print(default < gc.get_threshold() == STREAMING_THRESHOLDS, gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
