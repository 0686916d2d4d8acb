"""sd_notify readiness: ``keeper`` and ``serve`` send READY=1 (and STOPPING=1) to a real unix datagram socket.

The test binds the socket systemd would bind, passes it as ``$NOTIFY_SOCKET``, and reads
the datagrams; SIGTERM must then drain and exit 0, as ``systemctl stop`` expects.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli.sd_notify import READY, STOPPING, sd_notify
from tests.support.cli import INSTANCE, Linkctl


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        yield path, sock
    finally:
        sock.close()


def _start(linkctl: Linkctl, *args: str, notify: str) -> subprocess.Popen[str]:
    env = {**linkctl.env, "NOTIFY_SOCKET": notify}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=linkctl.cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_keeper_tells_systemd_when_it_is_ready_and_when_it_stops(
    linkctl: Linkctl, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    links = linkctl.cwd / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    linkctl("apply", "links")  # a store to keep
    keeper = _start(linkctl, "keeper", "--poll-interval", "0.2", notify=path)
    try:
        assert sock.recv(4096).decode() == READY
    finally:
        code, err = _stop(keeper)
    assert sock.recv(4096).decode() == STOPPING
    assert code == 0, err


def test_serve_tells_systemd_when_healthz_answers(
    linkctl: Linkctl, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = _start(linkctl, "serve", "--listen", f"127.0.0.1:{port}", notify=path)
    try:
        assert sock.recv(4096).decode() == READY
        # READY=1 came only once the server answers.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        code, err = _stop(server)
    assert sock.recv(4096).decode() == STOPPING
    assert code == 0, err


def test_sd_notify_reaches_an_abstract_socket_and_is_a_no_op_without_one() -> None:
    name = f"linkctl-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sd_notify(READY, {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"READY=1"
    assert not sd_notify(READY, {})
    assert not sd_notify(READY, {"NOTIFY_SOCKET": "relative/path"})
    assert not sd_notify(READY, {"NOTIFY_SOCKET": "/nonexistent/notify.sock"})  # never raises
