"""The schema registry's command line (``python -m devtools.registry``) run as a real process, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Iterator


def registry_process(cwd, env: dict[str, str], *args: str) -> subprocess.Popen:
    """``python -m devtools.registry`` on a free port, with only ``env``'s VPP_* settings (none inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    return subprocess.Popen([sys.executable, "-m", "devtools.registry", "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**clean, "PYTHONUNBUFFERED": "1", **env})


@contextlib.contextmanager
def serving(proc: subprocess.Popen) -> Iterator[str]:
    """The URL the registry command says it listens on; on leaving, SIGTERM must stop it cleanly (exit 0)."""
    try:
        line = proc.stdout.readline()
        assert line.startswith("schema registry listening on http://127.0.0.1:"), line + proc.stderr.read()
        yield line.split()[-1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
