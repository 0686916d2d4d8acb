"""Every value sops encrypted in a link file is a secret: sealed, redacted, sent only to the provider.

A link file encrypted by the real ``sops`` binary with ``--encrypted-regex`` holds canaries in
``clientId``, ``clientSecret`` and ``tokenParams.client_assertion``. Every command runs as a
subprocess; no canary may appear in any output, plan file, store byte or cache file, while a
recording loopback token endpoint must receive all three in the client-credentials request.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs

import pytest

from tests.conftest import require_tool
from tests.support.cli import Linkctl


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A token endpoint that remembers each request body and answers with a token."""

    bodies: ClassVar[list[dict[str, list[str]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.bodies.append(parse_qs(self.rfile.read(length).decode("utf-8")))
        payload = json.dumps({"access_token": "at-recorded", "token_type": "Bearer", "expires_in": 3600})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    bodies: ClassVar[list[dict[str, list[str]]]] = []
    handler = type("Handler", (_Recorder,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", bodies
    finally:
        server.shutdown()
        server.server_close()


def _link(name: str, endpoint: str, canaries: dict[str, str]) -> str:
    return (
        "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n"
        f"  name: {name}\nspec:\n  provider: custom\n  grant: client_credentials\n"
        f"  clientAuth: client_secret_post\n  tokenEndpoint: {endpoint}\n"
        f"  clientId: {canaries['id']}\n  clientSecret: {canaries['secret']}\n"
        "  scopes: [reports.read]\n  tokenParams:\n"
        f"    client_assertion: {canaries['assertion']}\n    audience: reports\n"
    )


def test_every_encrypted_value_stays_secret(
    linkctl: Linkctl, token_endpoint: tuple[str, list[dict[str, list[str]]]]
) -> None:
    sops = require_tool("sops")
    keygen = require_tool("age-keygen")
    endpoint, bodies = token_endpoint
    marker = f"canary-{uuid.uuid4().hex}"
    canaries = {"id": f"{marker}-id-1", "secret": f"{marker}-secret-1", "assertion": f"{marker}-jwt-1"}
    work = linkctl.cwd
    links = work / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(
        "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata:\n  name: wiki\n"
        "spec:\n  baseUrl: https://wiki.example.com\n  allowInsecureLoopback: true\n",
        encoding="utf-8",
    )
    key = work / "age-key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    recipient = next(line.split(": ")[1] for line in key.read_text().splitlines() if "public key" in line)
    linkctl.env.update({"SOPS_AGE_KEY_FILE": str(key), "SOPS_DISABLE_VERSION_CHECK": "1"})

    def encrypt(values: dict[str, str]) -> None:
        plain = links / "reports.yaml"
        plain.write_text(_link("reports", endpoint, values), encoding="utf-8")
        encrypted = subprocess.run(
            [sops, "encrypt", "--age", recipient, "--encrypted-regex",
             "^(clientId|clientSecret|client_assertion)$", str(plain)],
            check=True, capture_output=True, text=True, env=linkctl.env,
        ).stdout  # fmt: skip
        assert marker not in encrypted and "audience: reports" in encrypted
        plain.write_text(encrypted, encoding="utf-8")

    encrypt(canaries)
    results = []
    plan_files = [work / "plan1.json", work / "plan2.json"]
    results.append(linkctl("validate", "links"))
    results.append(linkctl("validate", "-o", "json", "links"))
    results.append(linkctl("plan", "-v", "links"))
    results.append(linkctl("plan", "-o", "json", "links"))
    results.append(linkctl("plan", "--out", str(plan_files[0]), "links"))
    results.append(linkctl("apply", "--plan", str(plan_files[0])))
    for command in (["list"], ["list", "-o", "json"], ["show", "reports"], ["show", "-o", "json", "reports"]):
        results.append(linkctl(*command))
    shown = linkctl("show", "-o", "json", "reports").json()
    assert shown["client_id"] == "(stored, encrypted)"
    assert shown["spec"]["tokenParams"] == {"audience": "reports", "client_assertion": "(stored, encrypted)"}

    # The provider receives every encrypted value, opened from the store only for the request.
    results.append(linkctl("token", "reports"))
    assert results[-1].stdout.strip() == "at-recorded"
    (body,) = bodies
    assert body["client_id"] == [canaries["id"]] and body["client_secret"] == [canaries["secret"]]
    assert body["client_assertion"] == [canaries["assertion"]] and body["audience"] == ["reports"]

    # A changed assertion is a sensitive change of exactly that field, with no value.
    encrypt({**canaries, "assertion": f"{marker}-jwt-2"})
    changed = linkctl("plan", "--detailed-exitcode", "links", expect=2)
    results.append(changed)
    assert "tokenParams.client_assertion: (sensitive value changed)" in changed.stdout, changed
    fields = linkctl("plan", "-o", "json", "links").json()["changes"][0]["fields"]
    assert fields == [{"path": "tokenParams.client_assertion", "sensitive": True}]
    results.append(linkctl("plan", "--out", str(plan_files[1]), "links"))
    results.append(linkctl("apply", "--plan", str(plan_files[1])))
    results.append(linkctl("state", "events", "--limit", "100"))
    results.append(linkctl("state", "events", "--limit", "100", "-o", "json"))
    results.append(linkctl("state", "show"))

    leaks = [str(r) for r in results if marker in r.output]
    assert not leaks, "canary printed by:\n" + "\n".join(leaks)
    for path in plan_files:
        assert marker not in path.read_text(encoding="utf-8"), path
    # The store (with its WAL), the key file and the parse cache all live under HOME.
    for root, _dirs, files in os.walk(linkctl.env["HOME"]):
        for name in files:
            path = Path(root, name)
            assert marker.encode() not in path.read_bytes(), f"canary in {path}"
    cache = Path(linkctl.env.get("XDG_CACHE_HOME", Path(linkctl.env["HOME"], ".cache")), "linkctl")
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*")), "the parse cache was not used"
    for path in cache.rglob("*"):
        assert not path.is_file() or marker.encode() not in path.read_bytes(), f"canary in {path}"
