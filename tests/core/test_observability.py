"""The operator counters exist from the start and count what a flow does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_canonicalize_counts_in_out_rejected_and_duplicates(tmp_path):
    # a process of its own: OpenTelemetry providers are process-global and set once
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(REPO / 'tests' / 'flows' / 'canonicalize')!r}, {str(REPO / 'tests' / 'support')!r}]
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from vpp.observability import setup_observability
        reader = InMemoryMetricReader()
        setup_observability("test", metric_readers=[reader])
        from pathlib import Path
        from test_canonicalize_replay import ROWS, ASSETS_CSV, write_dump
        from vpp.config import Settings
        from cli.replay import replay
        tmp = Path({str(tmp_path)!r})
        (tmp / "assets.csv").write_text(ASSETS_CSV)
        write_dump(tmp / "dump.jsonl", ROWS)
        replay(Settings(), "canonicalize", tmp / "dump.jsonl", tmp / "assets.csv", tmp / "out")
        totals = {{}}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        key = m.name + ("/" + p.attributes["reason"] if "reason" in p.attributes else "")
                        totals[key] = totals.get(key, 0) + p.value
        print(json.dumps(totals))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    import json

    totals = json.loads(result.stdout.strip().splitlines()[-1])
    canonical = sum(1 for _ in open(tmp_path / "out" / "telemetry.canonical.jsonl"))
    rejected = sum(v for k, v in totals.items() if k.startswith("vpp.records.rejected/"))
    assert totals["vpp.records.in"] == canonical + rejected + totals["vpp.records.duplicates"]
    assert totals["vpp.records.duplicates"] == 1
    assert totals["vpp.records.out"] == canonical + rejected
    assert totals["vpp.records.rejected/malformed_json"] == 2
