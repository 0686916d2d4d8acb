"""``linkctl authorize`` end to end: a subprocess against a real SQLite store and oidc-provider.

The link is written straight into the store (not through apply) so these tests depend only on
the store, the flows and the oracle. Each checks that no token or secret reaches the output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite
from tests.conftest import ROOT
from tests.support.oracle import OidcServer, OracleClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    return Settings.from_env(isolated_env)


def put_link(settings: Settings, server: OidcServer, client: OracleClient, name: str, **spec: Any) -> None:
    full: dict[str, Any] = {
        "provider": "custom",
        "clientId": client.client_id,
        "clientSecret": {"$secret": "clientSecret"},
        "scopes": ["openid", "offline_access", "api:read"],
        "grant": "authorization_code",
        "clientAuth": client.auth_method,
        "issuer": server.issuer,
        "authorizeParams": {"prompt": "consent"},
        "redirectUri": client.redirect_uris[0] if client.redirect_uris else None,
        **spec,
    }
    assert client.client_secret is not None
    with open_store(settings) as store, store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(
            LinkWrite(
                name=name,
                provider="custom",
                spec=full,
                spec_hash=hashlib.sha256(repr(sorted(full.items())).encode()).hexdigest(),
                secrets={"clientSecret": client.client_secret},
                secret_fingerprints={"clientSecret": "fp"},
                source_file="links/test.yaml",
                source_line=1,
            )
        )


def start_cli(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LINKCTL_STATE": settings.state_url, "PYTHONPATH": str(ROOT)}  # isolated_env
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def stored_tokens(settings: Settings, name: str) -> list[Secret]:
    with open_store(settings) as store:
        grant = store.get_grant(name, with_tokens=True)
    assert grant is not None
    return [t for t in (grant.access_token, grant.refresh_token) if t is not None]


def assert_clean(output: str, *values: Secret | None) -> None:
    for value in values:
        if value is not None:
            assert value.reveal() not in output, "a secret value reached the CLI output"


def test_authorize_with_loopback_listener(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    registered = oracle.register_client(redirect_uris=(f"http://127.0.0.1:{free_port()}/callback",))
    put_link(settings, oracle, registered, "mail")
    process = start_cli(settings, "authorize", "mail", "--no-browser", "--timeout", "30")
    processes.append(process)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith(f"{oracle.issuer}/auth?")
    callback = oracle.login_and_consent(url)
    # The browser's last step: deliver the redirect to the CLI's loopback listener.
    page = httpx.get(callback, timeout=10)
    assert page.status_code == 200 and "code=" not in page.text
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "authorized link 'mail'" in err and "with a refresh token" in err
    tokens = stored_tokens(settings, "mail")
    assert len(tokens) == 2
    assert_clean(url + out + err, *tokens, registered.client_secret)


def test_authorize_by_pasting_the_redirect(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    # A non-loopback redirect URL: nothing can listen there, so the CLI asks for a paste.
    registered = oracle.register_client(redirect_uris=("https://linkctl.example.com/oauth/callback/mail",))
    put_link(settings, oracle, registered, "mail")
    process = start_cli(settings, "authorize", "mail", "--no-browser", "--timeout", "30")
    processes.append(process)
    assert process.stdout is not None and process.stdin is not None
    url = process.stdout.readline().strip()
    callback = oracle.login_and_consent(url)
    out, err = process.communicate(callback + "\n", timeout=30)
    assert process.returncode == 0, err
    assert "paste" in err
    saved = stored_tokens(settings, "mail")
    assert saved, "no tokens were saved"
    assert_clean(url + out + err, *saved, registered.client_secret)


def test_authorize_without_refresh_token_fails_with_causes(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    registered = oracle.register_client(redirect_uris=("https://linkctl.example.com/cb",))
    # An explicit prompt other than consent (no prompt at all now implies prompt=consent).
    put_link(settings, oracle, registered, "mail", authorizeParams={"prompt": "login"})
    process = start_cli(settings, "authorize", "mail", "--no-browser")
    processes.append(process)
    assert process.stdout is not None
    callback = oracle.login_and_consent(process.stdout.readline().strip())
    _out, err = process.communicate(callback + "\n", timeout=30)
    assert process.returncode != 0
    assert "no refresh token" in err and "prompt: consent" in err


def test_authorize_device_flow(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    registered = oracle.register_client(
        auth_method="client_secret_post",
        grant_types=("urn:ietf:params:oauth:grant-type:device_code", "refresh_token"),
    )
    put_link(settings, oracle, registered, "tv", grant="device_code", redirectUri=None)
    process = start_cli(settings, "authorize", "tv", "--device", "--timeout", "60")
    processes.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "enter the code:" in line
    user_code = line.rsplit(":", 1)[1].strip()
    threading.Timer(0.2, oracle.approve_device, args=(user_code,)).start()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    saved = stored_tokens(settings, "tv")
    assert saved, "no tokens were saved"
    assert_clean(line + out + err, *saved, registered.client_secret)


def test_authorize_client_credentials_obtains_tokens_directly(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    registered = oracle.register_machine_client()
    put_link(settings, oracle, registered, "robot", grant="client_credentials", scopes=["api:read"])
    process = start_cli(settings, "authorize", "robot", "-o", "json")
    processes.append(process)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "no consent is needed" in err
    assert '"refresh_token": false' in out
    saved = stored_tokens(settings, "robot")
    assert saved, "no tokens were saved"
    assert_clean(out + err, *saved, registered.client_secret)


def test_doctor_reports_findings(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    registered = oracle.register_client(redirect_uris=("https://linkctl.example.com/cb",))
    put_link(settings, oracle, registered, "mail", scopes=["openid"], tokenEndpoint=None)
    process = start_cli(settings, "doctor", "mail")
    processes.append(process)
    out, err = process.communicate(timeout=30)
    assert "discovery: metadata found" in out
    assert "token endpoint" in out and "answers" in out
    assert "offline_access" in out
    assert "not authorized yet" in out
    assert process.returncode == 0, out + err  # warnings only
    assert_clean(out + err, registered.client_secret)


def test_doctor_checks_redirect_registration_and_client_secret(
    oracle: OidcServer, settings: Settings, processes: list[subprocess.Popen[str]]
) -> None:
    registered = oracle.register_client(redirect_uris=("https://linkctl.example.com/cb",))
    put_link(settings, oracle, registered, "good")
    put_link(settings, oracle, registered, "unregistered", redirectUri="https://linkctl.example.com/other")
    wrong = dataclasses.replace(registered, client_secret=Secret("not-the-secret-of-this-client"))
    put_link(settings, oracle, wrong, "badsecret")

    def doctor(name: str) -> tuple[int, list[dict[str, Any]], str]:
        process = start_cli(settings, "doctor", name, "-o", "json")
        processes.append(process)
        out, err = process.communicate(timeout=30)
        assert_clean(out + err, registered.client_secret, wrong.client_secret)
        return process.returncode, json.loads(out), err

    def verdicts(findings: list[dict[str, Any]]) -> dict[str, str]:
        return {f["check"]: f["severity"] for f in findings}

    code, findings, err = doctor("good")
    assert verdicts(findings)["redirect URL"] == "ok" and verdicts(findings)["client authentication"] == "ok"
    assert code == 0, err
    code, findings, _ = doctor("unregistered")
    mismatch = [f for f in findings if f["check"] == "redirect URL" and f["severity"] == "error"]
    assert mismatch and "https://linkctl.example.com/other" in mismatch[0]["fix"] and code != 0
    code, findings, _ = doctor("badsecret")
    auth = [f for f in findings if f["check"] == "client authentication"]
    assert auth[0]["severity"] == "error" and "invalid_client" in auth[0]["message"] and code != 0
