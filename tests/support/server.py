"""A real ``linkctl serve`` for the server tests: a subprocess on a free loopback port.

:func:`serve` starts ``python -m reconciler serve --listen 127.0.0.1:0`` with an
environment (``tests.support.oracle_links.state_env`` gives one naming a fresh store),
waits until the server answers, and yields a :class:`Served`:

- ``base_url``, ``port``, ``process``; ``log()`` is its stderr so far (the access log too);
- ``get(path, key=None, **kw)`` / ``request(method, path, key=None, **kw)``: httpx calls,
  ``key`` sent as ``Authorization: Bearer``;
- ``stop()`` ends it with SIGTERM (also at the end of the ``with`` block) and returns its exit code.

:func:`create_key` runs ``linkctl apikey create`` and returns the printed key; the store of
a test is prepared with the oracle helpers (``tests.support.oracle_links``), e.g.
``add_authorized_links(server, open_store(env), ["a"], client)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT

_LISTENING = re.compile(r"listening on (http://[^\s,;]+)")


@dataclasses.dataclass
class Served:
    """A running ``linkctl serve`` (see the module docstring)."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: Mapping[str, str]
    final_log: str | None = None  # kept when the process ends and its scratch directory goes

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    def log(self) -> str:
        """Its stderr so far: start-up notes, server messages, access log lines."""
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, *, key: str | None = None, **kw: Any) -> httpx.Response:
        """One HTTP request (``key`` as a bearer token), no redirects followed."""
        headers = dict(kw.pop("headers", None) or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        kw.setdefault("timeout", 30)
        return httpx.request(method, self.base_url + path, headers=headers, **kw)

    def get(self, path: str, *, key: str | None = None, **kw: Any) -> httpx.Response:
        """A GET request."""
        return self.request("GET", path, key=key, **kw)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait (kill after ``timeout``); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def linkctl_argv(*args: str) -> list[str]:
    """argv running ``linkctl`` from this checkout."""
    return [sys.executable, "-m", "reconciler", *args]


@contextlib.contextmanager
def serve(env: Mapping[str, str], *args: str, startup_timeout: float = 30) -> Iterator[Served]:
    """Run ``linkctl serve --listen 127.0.0.1:0 ARGS`` until the block ends (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="linkctl-serve-") as scratch:
        log_path = Path(scratch) / "serve.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                linkctl_argv("serve", "--listen", "127.0.0.1:0", *args),
                env=dict(env),
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd=ROOT,
            )
        served: Served | None = None
        try:
            deadline = time.monotonic() + startup_timeout
            while served is None:
                match = _LISTENING.search(log_path.read_text(errors="replace"))
                if match:
                    served = Served(match.group(1), process, log_path, env)
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"linkctl serve did not start:\n{log_path.read_text(errors='replace')}"
                    )
                time.sleep(0.05)
            while True:  # the socket is bound before the app is up: wait for an answer
                try:
                    served.get("/openapi.json", timeout=2)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"linkctl serve did not answer:\n{served.log()}") from None
                    time.sleep(0.05)
            yield served
        finally:
            if served is not None:
                served.stop()
                served.final_log = served.log()
            elif process.poll() is None:
                process.kill()
                process.wait(5)


def create_key(env: Mapping[str, str], *args: str) -> str:
    """``linkctl apikey create ARGS``; the key (the last line of stdout)."""
    result = subprocess.run(
        linkctl_argv("apikey", "create", *args),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def run_linkctl(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run linkctl to completion (text output captured)."""
    return subprocess.run(
        linkctl_argv(*args), env=dict(env), capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


__all__ = ["Served", "create_key", "run_linkctl", "serve"]
