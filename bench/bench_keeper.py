"""Benchmark: N links due at once, refreshed by the keeper against a fast local token endpoint.

Measures durable refreshes per second (each rotated refresh token committed to the
SQLite store, WAL + synchronous=FULL, before its lease is released), CPU seconds per
refresh and peak memory of the keeper process, and compares with a hand-written
sequential httpx refresh loop (no store, no leases) in the same run.

The token endpoint is a tiny threaded HTTP server on 127.0.0.1 in a child process (so
its CPU is not counted as the keeper's). Run::

    python bench/bench_keeper.py [--links 10000] [--workers 4]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import resource
import secrets
import sys
import tempfile
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from reconciler.oauth import keeper
from reconciler.oauth.client import TokenClient, TokenResponse
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one-packet answers: no 40 ms delayed-ACK stalls on keep-alive

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {
                "access_token": secrets.token_urlsafe(24),
                "refresh_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(port_out: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port_out.put(server.server_address[1])
    server.serve_forever()


def _settings(tmp: Path) -> Settings:
    key = base64.b64encode(os.urandom(32)).decode()
    return Settings.from_env(
        {"HOME": str(tmp), "LINKCTL_STATE": f"sqlite:///{tmp / 'state.db'}", "LINKCTL_STATE_KEY": key}
    )


def _populate(store: Store, n: int, endpoint: str, now: float) -> None:
    spec: dict[str, Any] = {
        "provider": "custom",
        "clientId": "bench",
        "clientSecret": {"$secret": "clientSecret"},
        "scopes": ["read"],
        "grant": "authorization_code",
        "clientAuth": "client_secret_basic",
        "tokenEndpoint": endpoint,
    }
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
                    source_file=None,
                    source_line=None,
                )
            )
    first = TokenResponse(
        access_token=Secret("at0"),
        refresh_token=Secret("rt0"),
        token_type="Bearer",
        expires_in=60,
        scope=None,
        received_at=now - 3600,
    )
    for i in range(n):
        store.save_authorization(f"link-{i:05d}", first, clock_now=now - 3600)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_keeper(n: int, workers: int, endpoint: str) -> dict[str, float]:
    """Refresh n due links with the Keeper (real store, leases, fencing, durable commits)."""
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-") as tmp:
        settings = _settings(Path(tmp))
        store = open_store(settings, notice=lambda _: None)
        _populate(store, n, endpoint, time.time())
        assert len(store.due_links(time.time(), limit=n + 1)) == n
        client = TokenClient(timeout=10)
        runner = keeper.Keeper(
            store,
            client,
            store_factory=lambda: open_store(settings, notice=lambda _: None),
            workers=workers,
            policy=keeper.KeeperPolicy(batch=1000),
        )
        tracemalloc.start()
        cpu0, t0 = _cpu(), time.perf_counter()
        report = runner.run_once()
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        refreshed = len(report.refreshed)
        healthy = sum(1 for g in store.list_grants() if g.status == "healthy" and g.token_version == 2)
        client.close()
        store.close()
    return {
        "refreshed": refreshed,
        "durable": healthy,
        "seconds": elapsed,
        "per_second": refreshed / elapsed,
        "cpu_ms_per_refresh": 1000 * cpu / max(refreshed, 1),
        "peak_traced_mib": peak / 2**20,
    }


def bench_baseline(n: int, endpoint: str) -> dict[str, float]:
    """A sequential httpx refresh loop: no store, no leases, a kept-alive connection."""
    cpu0, t0 = _cpu(), time.perf_counter()
    with httpx.Client(timeout=10) as http:
        for _ in range(n):
            answer = http.post(
                endpoint,
                data={"grant_type": "refresh_token", "refresh_token": "rt"},
                auth=("bench", "bench-secret"),
            )
            answer.json()
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {
        "refreshed": n,
        "seconds": elapsed,
        "per_second": n / elapsed,
        "cpu_ms_per_refresh": 1000 * cpu / n,
    }


def main() -> int:
    """Run both benchmarks and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--baseline", type=int, default=None, help="requests in the baseline (default: --links)"
    )
    args = parser.parse_args()
    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{ports.get(timeout=10)}/token"
        base = bench_baseline(args.baseline or args.links, endpoint)
        kept = bench_keeper(args.links, args.workers, endpoint)
    finally:
        server.terminate()
        server.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cpus, python {sys.version.split()[0]}")
    print(
        f"baseline (sequential httpx, keep-alive, no store): {base['per_second']:.0f} req/s,"
        f" {base['cpu_ms_per_refresh']:.2f} ms CPU/req"
    )
    print(
        f"keeper ({args.workers} workers, {kept['refreshed']:.0f} links, {kept['durable']:.0f} durable):"
        f" {kept['per_second']:.0f} refreshes/s, {kept['cpu_ms_per_refresh']:.2f} ms CPU/refresh,"
        f" peak traced {kept['peak_traced_mib']:.1f} MiB, max RSS {maxrss:.0f} MiB"
    )
    print(
        f"ratio keeper/baseline: throughput {kept['per_second'] / base['per_second']:.2f}x,"
        f" CPU per refresh {kept['cpu_ms_per_refresh'] / base['cpu_ms_per_refresh']:.2f}x"
    )
    print("BENCH-JSON " + json.dumps({"baseline": base, "keeper": kept, "workers": args.workers}))
    return 0 if kept["durable"] == kept["refreshed"] == args.links else 1


if __name__ == "__main__":
    sys.exit(main())
