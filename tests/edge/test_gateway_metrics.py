"""The gateway counts frames in a plain dict and an observable counter reports them (no SDK call per frame)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_frames_counted_per_type_and_reason_reach_the_metric_reader():
    # a process of its own: OpenTelemetry providers are process-global and set once
    script = textwrap.dedent("""
        import json
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from vpp.observability import setup_observability
        reader = InMemoryMetricReader()
        setup_observability("test", metric_readers=[reader])
        from edge.gateway import _Metrics, _TELEMETRY
        m = _Metrics()
        for _ in range(3):
            m.frame_counts[_TELEMETRY] += 1
        m.frame_counts[(("type", "refused"), ("reason", "too_many_readings"))] += 1
        first = reader.get_metrics_data()
        m.frame_counts[_TELEMETRY] += 2
        def points(data):
            return sorted((json.dumps(dict(p.attributes), sort_keys=True), p.value, m.data.is_monotonic)
                          for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                          if m.name == "vpp.gateway.frames" for p in m.data.data_points)
        print(json.dumps([points(first), points(reader.get_metrics_data())]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    refused = ['{"reason": "too_many_readings", "type": "refused"}', 1, True]
    assert first == [refused, ['{"type": "telemetry"}', 3, True]]
    assert second == [refused, ['{"type": "telemetry"}', 5, True]]  # cumulative, as the counter it replaces
