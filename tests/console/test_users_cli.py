"""`vpp users`, `vpp tokens` and `vpp serve` as an operator runs them, on the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import psycopg

from console_fixtures import wait_for

VPP = [sys.executable, "-m", "cli"]


def _env(settings) -> dict[str, str]:
    return {**os.environ, "VPP_POSTGRES_DSN": settings.postgres_dsn}


def _vpp(settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(VPP + list(args), input=stdin, env=_env(settings), capture_output=True, text=True, timeout=60)


def test_users_and_tokens_from_the_command_line(isolated_settings):
    s = isolated_settings
    added = _vpp(s, "users", "add", "carol", "--role", "operator", stdin="a long password\n")
    assert added.returncode == 0, added.stderr
    assert _vpp(s, "users", "add", "carol", "--role", "viewer", stdin="a long password\n").stderr.strip() == \
        "vpp: error: user 'carol' exists already"
    assert "at least 8" in _vpp(s, "users", "add", "dave", "--role", "viewer", stdin="short\n").stderr
    assert _vpp(s, "users", "add", "erin", "--role", "root", stdin="a long password\n").returncode == 2
    listed = json.loads(_vpp(s, "users", "list", "--json").stdout)
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [("carol", "operator", False)]

    created = _vpp(s, "tokens", "create", "carol", "--expires-days", "2")
    token = created.stdout.strip()
    assert created.returncode == 0 and token.startswith("vpp_") and token not in created.stderr
    with psycopg.connect(s.postgres_dsn) as conn:
        (hash_, expires), = conn.execute("SELECT token_sha256, expires_at FROM api_tokens").fetchall()
        stored = json.dumps([str(v) for row in conn.execute("SELECT * FROM api_tokens") for v in row])
        (password_hash,), = conn.execute("SELECT password_hash FROM users").fetchall()
    assert token not in stored and len(hash_) == 64 and expires is not None
    assert password_hash.startswith("$argon2id$")

    assert _vpp(s, "tokens", "revoke", "1").returncode == 0
    assert "no token 99" in _vpp(s, "tokens", "revoke", "99").stderr
    assert _vpp(s, "users", "disable", "carol").returncode == 0
    assert json.loads(_vpp(s, "users", "list", "--json").stdout)[0]["disabled"] is True
    with psycopg.connect(s.postgres_dsn) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY id")]
    assert actions[0] == "users.add" and {"tokens.create", "tokens.revoke", "users.disable"} <= set(actions)


def test_vpp_serve_writes_its_url_for_vpp_status_and_removes_it_on_exit(stack, isolated_settings, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text((stack.state_dir / "stack.json").read_text())
    env = {**_env(isolated_settings), "VPP_STATE_DIR": str(state)}
    proc = subprocess.Popen(VPP + ["serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (state / "api.json").exists(), 60, "api.json")
        url = json.loads((state / "api.json").read_text())["url"]
        wait_for(lambda: _answers(url), 30, "the server to answer")
        status = json.loads(subprocess.run(VPP + ["status", "--json"], env=env, capture_output=True, text=True).stdout)
        assert status["api"] == url
        assert httpx.get(url + "/api/tree").status_code == 401
        key = state / "console-session.key"
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text().strip()) == 64
        assert key.read_text().strip() not in " ".join(proc.args)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert not (state / "api.json").exists()
    status = json.loads(subprocess.run(VPP + ["status", "--json"], env=env, capture_output=True, text=True).stdout)
    assert "api" not in status


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.2)
        return False
