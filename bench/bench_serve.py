#!/usr/bin/env python3
"""Benchmark the token API: ``GET /v1/links/{name}/token`` of ``linkctl serve`` under wrk.

Next to two ceilings measured in the same run, each a single process like one ``serve``:
a static nginx response (``worker_processes 1``: the machine's HTTP limit) and a bare
Starlette JSON endpoint on uvicorn (the framework's limit; granian too, for the stack
choice). The server under test is pinned to CPU 0 and wrk (one thread) to CPU 1 when
there are two. ``linkctl serve --keeper`` runs on a store of N links (default 10,000)
whose tokens are fresh, with its access log on (to a file): the key check (cached
1 s), the store read and the decryption of a token are all in each request. Its RSS is
read from /proc after start-up and after the load. Also times ``GET /v1/links`` of all N.

The same ``serve --keeper`` then runs on a scratch PostgreSQL database (``--pg``, created and
dropped here): each token request reads the key and the token in a thread-pool thread.

    python bench/bench_serve.py [--links 10000] [--duration 10] [--connections 32] [--pg URL]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.oauth.client import TokenResponse  # noqa: E402
from reconciler.secrets import Secret  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.store import open_store  # noqa: E402
from reconciler.store.base import LinkWrite  # noqa: E402

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {"access_token": "x" * 40, "token_type": "Bearer", "expires_at": "2026-01-01T00:00:00Z", "scope": None}


async def token(request):
    return JSONResponse(BODY, headers={"cache-control": "no-store"})


app = Starlette(routes=[Route("/v1/links/{name}/token", token)])
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{body}'; }}
    }}
}}
"""


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> list[str]:
    """A ``taskset`` prefix pinning to ``cpu`` when the machine has two CPUs or more."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
    """Wait until ``url`` answers at all."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, headers=headers, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wrk(url: str, *, duration: float, connections: int, key: str | None = None) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 latency (ms), non-2xx answers."""
    args = [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    if key:
        args[len(pin(1)) + 1 : len(pin(1)) + 1] = ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration + 60).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert rps, out
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
    }


@contextlib.contextmanager
def running(args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[int]:
    """A child process for the block (SIGTERM at the end); yields its pid."""
    with open(log or os.devnull, "wb") as sink:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=sink, cwd=ROOT)
    try:
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tree(pid: int) -> list[int]:
    """A process and its descendants (granian runs the app in a worker process)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def rss_mib(pid: int) -> tuple[float, float]:
    """Current and peak resident set size of a process and its descendants, summed (MiB)."""
    now = peak = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{member}/status").read_text()
            now += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            peak += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return now / 1024, peak / 1024


def populate(env: dict[str, str], n: int) -> None:
    """N links with fresh tokens (valid two hours: the keeper has nothing due)."""
    spec: dict[str, Any] = {
        "provider": "custom",
        "clientId": "bench",
        "clientSecret": {"$secret": "clientSecret"},
        "scopes": ["read"],
        "grant": "authorization_code",
        "clientAuth": "client_secret_basic",
        "tokenEndpoint": f"http://127.0.0.1:{free_port()}/token",  # nothing listens: nothing is sent
    }
    now = time.time()
    with open_store(Settings.from_env(env), notice=lambda _: None) as store:
        with store.write(expected_serial=None, actor="bench") as tx:
            for i in range(n):
                tx.put_link(
                    LinkWrite(
                        name=f"link-{i:05d}",
                        provider="custom",
                        spec=spec,
                        spec_hash=hashlib.sha256(b"bench").hexdigest(),
                        secrets={"clientSecret": Secret("bench-secret")},
                        secret_fingerprints={},
                        source_file="links/bench.yaml",
                        source_line=i + 1,
                    )
                )
        for i in range(n):
            response = TokenResponse(
                access_token=Secret(f"at-{i:05d}-" + "a" * 30),
                refresh_token=Secret(f"rt-{i:05d}"),
                token_type="Bearer",
                expires_in=7200,
                scope="read",
                received_at=now,
            )
            store.save_authorization(f"link-{i:05d}", response, clock_now=now)


def linkctl(env: dict[str, str], *args: str) -> str:
    """Run linkctl; its stdout."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def _on_postgres(opts: argparse.Namespace, env: dict[str, str], tmp: Path, path: str) -> dict[str, float]:
    """The token API of ``serve --keeper`` on a scratch PostgreSQL database (same links, a new key)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_postgres import scratch_database

    with scratch_database(opts.pg) as url:
        pg_env = {**env, "LINKCTL_STATE": url}
        started = time.perf_counter()
        populate(pg_env, opts.links)
        print(f"populate on PostgreSQL: {opts.links} links in {time.perf_counter() - started:.1f} s")
        key = linkctl(pg_env, "apikey", "create", "--links", "*", "--name", "bench").splitlines()[-1]
        port = free_port()
        serve = [sys.executable, "-m", "reconciler", "serve", "--keeper", "--listen", f"127.0.0.1:{port}"]
        with running([*pin(0), *serve], env=pg_env, log=tmp / "serve-pg.log"):
            wait_http(f"http://127.0.0.1:{port}/openapi.json")
            time.sleep(2)
            import httpx

            answer = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
            target = f"http://127.0.0.1:{port}{path}"
            return wrk(target, duration=opts.duration, connections=opts.connections, key=key)


def main() -> int:
    """Run the benchmark and print figures and ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin URL of a PostgreSQL server for the same run on a PostgreSQL store ('' to skip)",
    )
    opts = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench_serve: {tool} is not installed", file=sys.stderr)
            return 1
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    print(f"# bench_serve: {os.cpu_count()} CPUs, load average before {os.getloadavg()}, {opts.links} links")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        tmp = Path(scratch)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINKCTL_")}
        env.update(
            HOME=str(tmp),
            LINKCTL_STATE=f"sqlite:///{tmp / 'state.db'}",
            LINKCTL_STATE_KEY=base64.b64encode(os.urandom(32)).decode(),
            PYTHONPATH=str(ROOT),
        )
        started = time.perf_counter()
        populate(env, opts.links)
        print(f"populate: {opts.links} links with tokens in {time.perf_counter() - started:.1f} s")
        key = linkctl(env, "apikey", "create", "--links", "*", "--name", "bench").splitlines()[-1]
        name = f"link-{opts.links // 2:05d}"
        path = f"/v1/links/{name}/token?min_valid=60"

        port = free_port()
        body = json.dumps(
            {"access_token": "x" * 40, "token_type": "Bearer", "expires_at": None, "scope": None}
        )
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port, body=body))
        with running([*pin(0), nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")]):
            wait_http(f"http://127.0.0.1:{port}/")
            results["nginx static (1 worker)"] = wrk(
                f"http://127.0.0.1:{port}{path}", duration=opts.duration, connections=opts.connections
            )

        (tmp / "bare_app.py").write_text(BARE_APP)
        bare_env = {**env, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        port = free_port()
        uvicorn_args = [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--no-access-log",
        ]
        with running([*pin(0), *uvicorn_args, "--log-level", "warning"], env=bare_env):
            wait_http(f"http://127.0.0.1:{port}/")
            results["bare Starlette on uvicorn"] = wrk(
                f"http://127.0.0.1:{port}{path}", duration=opts.duration, connections=opts.connections
            )
        granian = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
        if Path(granian).exists():
            port = free_port()
            granian_args = [
                granian,
                "--interface",
                "asgi",
                "--port",
                str(port),
                "--workers",
                "1",
                "bare_app:app",
            ]
            with running([*pin(0), *granian_args], env={**bare_env, "PYTHONPATH": str(tmp)}):
                wait_http(f"http://127.0.0.1:{port}/")
                results["bare Starlette on granian"] = wrk(
                    f"http://127.0.0.1:{port}{path}", duration=opts.duration, connections=opts.connections
                )

        # The same app on uvicorn (for the choice of server; `serve` itself runs granian).
        port = free_port()
        app_args = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "reconciler.server.app:app_from_environment",
        ]
        app_env = {**env, "LINKCTL_SERVE_OPTIONS": json.dumps({"keeper": True})}
        app_args += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        with running([*pin(0), *app_args], env=app_env, log=tmp / "uvicorn.log"):
            wait_http(f"http://127.0.0.1:{port}/openapi.json")
            results["linkctl app on uvicorn (token API)"] = wrk(
                f"http://127.0.0.1:{port}{path}",
                duration=opts.duration,
                connections=opts.connections,
                key=key,
            )

        port = free_port()
        serve = [sys.executable, "-m", "reconciler", "serve", "--keeper", "--listen", f"127.0.0.1:{port}"]
        with running([*pin(0), *serve], env=env, log=tmp / "serve.log") as pid:
            wait_http(f"http://127.0.0.1:{port}/openapi.json")
            time.sleep(2)  # the keeper's first look at the store
            idle_rss = rss_mib(pid)
            import httpx

            answer = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
            started = time.perf_counter()
            listing = httpx.get(
                f"http://127.0.0.1:{port}/v1/links", headers={"Authorization": f"Bearer {key}"}, timeout=120
            )
            list_seconds = time.perf_counter() - started
            assert listing.status_code == 200 and len(listing.json()["links"]) == opts.links
            results["linkctl serve --keeper (token API)"] = wrk(
                f"http://127.0.0.1:{port}{path}",
                duration=opts.duration,
                connections=opts.connections,
                key=key,
            )
            loaded_rss = rss_mib(pid)
        log_lines = len((tmp / "serve.log").read_bytes().splitlines())
        if opts.pg:
            results["linkctl serve --keeper on PostgreSQL"] = _on_postgres(opts, env, tmp, path)
    print(f"load average after {os.getloadavg()}")
    print(f"{'':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for label, r in results.items():
        print(f"{label:38} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8.0f}")
    ours = results["linkctl serve --keeper (token API)"]
    if "linkctl serve --keeper on PostgreSQL" in results:
        on_pg = results["linkctl serve --keeper on PostgreSQL"]["rps"] / ours["rps"]
        print(f"ratio token API on PostgreSQL / on SQLite: {on_pg:.2f}")
    for label in ("nginx static (1 worker)", "bare Starlette on uvicorn", "bare Starlette on granian"):
        if label in results:
            print(f"ratio token API / {label}: {ours['rps'] / results[label]['rps']:.2f}")
    on_uvicorn = (
        results["linkctl app on uvicorn (token API)"]["rps"] / results["bare Starlette on uvicorn"]["rps"]
    )
    print(f"ratio app on uvicorn / bare Starlette on uvicorn: {on_uvicorn:.2f}")
    print(f"serve --keeper RSS with {opts.links} links: {idle_rss[0]:.0f} MiB after start-up,")
    print(f"  {loaded_rss[0]:.0f} MiB after the load (peaks summed {loaded_rss[1]:.0f} MiB; main + worker)")
    print(f"GET /v1/links of {opts.links} links: {list_seconds:.2f} s; access log lines written: {log_lines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
