"""``--log-format text|json`` (and ``LINKCTL_LOG_FORMAT``) of ``keeper`` and ``reconcile``: a line per event.

A loopback token endpoint answers client-credentials requests: one link gets tokens, the
other is refused with ``invalid_client``. The keeper's lines name the link, outcome, duration
and next refresh, a failure's class and fix; the canary client secret and the access token
appear in no line, in either format, wherever the flag is written.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Linkctl

CANARY = "canary-log-secret-7d2e"
ACCESS = "at-canary-log-91b3"


class _Endpoint(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/good":
            status, body = 200, {"access_token": ACCESS, "token_type": "Bearer", "expires_in": 3600}
        else:
            # A provider that echoes the secret it was sent: the log must still not show it.
            status, body = 401, {"error": "invalid_client", "error_description": f"secret {CANARY} expired"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _links(work: Path, base: str) -> Path:
    links = work / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(
        "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata:\n  name: wiki\n"
        "spec:\n  baseUrl: https://wiki.example.com\n  allowInsecureLoopback: true\n",
        encoding="utf-8",
    )
    for name, path in (("reports", "/good"), ("expired", "/bad")):
        (links / f"{name}.yaml").write_text(
            "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n"
            f"  name: {name}\nspec:\n  provider: custom\n  grant: client_credentials\n"
            f"  tokenEndpoint: {base}{path}\n  clientId: c-{name}\n"
            "  clientSecret: {fromEnv: LOG_CLIENT_SECRET}\n  scopes: [reports.read]\n",
            encoding="utf-8",
        )
    return links


def _events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_keeper_and_reconcile_log_one_event_per_line(linkctl: Linkctl, endpoint: str) -> None:
    linkctl.env["LOG_CLIENT_SECRET"] = CANARY
    _links(linkctl.cwd, endpoint)
    runs = []

    # reconcile: one event saying what it did; an unchanged run is an event too.
    applied = linkctl("reconcile", "links", "--log-format", "json")
    runs.append(applied)
    (event,) = [e for e in _events(applied.stderr) if e["logger"] == "linkctl.reconcile"]
    assert event["message"] == "reconcile" and event["outcome"] == "applied" and event["level"] == "info"
    assert event["changes"]["create"] == 2 and event["serial"] == 1 and event["exit_code"] == 0  # type: ignore[index]
    unchanged = linkctl("reconcile", "links", env={"LINKCTL_LOG_FORMAT": "json"})
    runs.append(unchanged)
    (event,) = _events(unchanged.stderr)
    assert event["outcome"] == "unchanged" and unchanged.stdout == ""
    as_json = linkctl("reconcile", "-o", "json", "links")  # -o json: the unchanged plan is data
    runs.append(as_json)
    assert as_json.json()["applied"] is False

    # keeper --once, the flag after the command: one refresh line per link.
    once = linkctl("keeper", "--once", "--log-format", "json", expect=1)
    runs.append(once)
    refreshes = {e["link"]: e for e in _events(once.stderr) if e["message"] == "refresh"}
    assert set(refreshes) == {"reports", "expired"}, once
    good, bad = refreshes["reports"], refreshes["expired"]
    assert good["outcome"] == "obtained" and good["level"] == "info" and good["status"] == "healthy"
    assert isinstance(good["duration_ms"], float) and str(good["next_refresh"]).endswith("Z")
    assert bad["outcome"] == "failed" and bad["level"] == "warning"
    assert bad["status"] == "configuration_error" and bad["error_class"]
    assert "linkctl doctor expired" in str(bad["fix"])

    # Before the command, and as text, on a second store (a parked link is not tried again).
    other = f"sqlite:///{linkctl.cwd / 'other.db'}"
    runs.append(linkctl("reconcile", "links", "--state", other))
    text = linkctl("--log-format", "text", "keeper", "--once", "--state", other, expect=1)
    runs.append(text)
    lines = [line for line in text.stderr.splitlines() if line.startswith(("info:", "warning:"))]
    assert any(
        line.startswith("warning: linkctl.keeper: refresh link=expired outcome=failed") for line in lines
    )

    # A failing reconcile logs its error class (the error itself is still rendered once).
    failed = linkctl("reconcile", "missing-dir", "--log-format", "json", expect=3)
    runs.append(failed)
    (event,) = _events(failed.stderr)
    assert event["outcome"] == "error" and event["error_class"] == "invalid_configuration"
    assert event["level"] == "error" and "no such file or directory" in failed.stderr

    # A bad LINKCTL_LOG_FORMAT is a usage error.
    runs.append(linkctl("keeper", "--once", env={"LINKCTL_LOG_FORMAT": "xml"}, expect=64))

    for run in runs:
        assert CANARY not in run.output and ACCESS not in run.output, run
