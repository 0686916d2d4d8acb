"""``linkctl apikey`` and ``linkctl serve`` as commands: output, usage errors, exit codes.

The key is the last line of stdout and appears nowhere else (not in ``list``, not in the
store file); bad flags exit 64 with a message, a taken port is a clear error (exit 1),
SIGTERM stops ``serve`` cleanly (exit 0).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.support.oracle_links import state_env
from tests.support.server import run_linkctl, serve


def test_apikey_create_list_revoke(tmp_path: Path) -> None:
    env = state_env(tmp_path)
    created = run_linkctl(
        env, "apikey", "create", "--links", "ci-*", "--links", "deploy", "--name", "ci", "--expires", "30"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    assert key.startswith("lk_") and key not in created.stderr
    listed = run_linkctl(env, "apikey", "list", "-o", "json")
    views = json.loads(listed.stdout)
    assert [v["patterns"] for v in views] == [["ci-*", "deploy"]] and views[0]["label"] == "ci"
    assert set(views[0]) >= {"id", "label", "patterns", "created_at", "last_used_at", "expires_at"}
    assert views[0]["state"] == "active" and views[0]["expires_at"] is not None
    text = run_linkctl(env, "apikey", "list")
    assert views[0]["id"] in text.stdout and "ci-*,deploy" in text.stdout
    for output in (listed.stdout, text.stdout, text.stderr):
        assert key not in output and key[3:] not in output
    store_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert key.encode() not in store_bytes

    assert run_linkctl(env, "apikey", "revoke", views[0]["id"]).returncode == 0
    assert json.loads(run_linkctl(env, "apikey", "list", "-o", "json").stdout)[0]["state"] == "revoked"
    unknown = run_linkctl(env, "apikey", "revoke", "key_ffffffffffffffff")
    assert unknown.returncode == 1 and "no API key with id" in unknown.stderr


def test_usage_errors_exit_64(tmp_path: Path) -> None:
    env = state_env(tmp_path)
    for args in (
        ["apikey", "create"],
        ["apikey", "create", "--links", "a b"],
        ["apikey", "create", "--links", "x", "--expires", "0"],
        ["apikey", "create", "--links", "x", "--expires", "nan"],
        ["apikey", "revoke", "not-an-id"],
        ["serve", "--listen", "8080"],
        ["serve", "--listen", "host:99999"],
        ["serve", "--workers", "2"],
    ):
        result = run_linkctl(env, *args)
        assert result.returncode == 64, (args, result.stderr)
        assert "Traceback" not in result.stderr and "error" in result.stderr


def test_serve_refuses_a_taken_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = state_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_linkctl(env, "serve", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    with serve(env) as running:
        assert running.get("/v1/links").status_code == 401
    assert running.process.returncode == 0, running.log()
