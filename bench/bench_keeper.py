"""Benchmark: N links due at once, refreshed by the keeper against a fast local token endpoint.

Measures durable refreshes per second (each rotated refresh token committed to the
SQLite store, WAL + synchronous=FULL, before its lease is released), CPU seconds per
refresh and peak memory of the keeper process, and compares with a hand-written
sequential httpx refresh loop (no store, no leases) in the same run.

The token endpoint is a tiny threaded HTTP server on 127.0.0.1 in a child process (so
its CPU is not counted as the keeper's); it logs every refresh token it issues. The
keeper runs in a fresh child process of its own, so its CPU time and max RSS are its
alone. Afterwards the store is read back: every link must be healthy at token version 2,
with no lease, nothing in flight, no lost-response flag, and its stored refresh token
must be exactly one the server issued (each issued token stored once: no lost grant,
no double refresh). ``--trace-memory`` adds a second, untimed run under tracemalloc
(it slows Python down several times, so it never runs in the timed pass). Run::

    python bench/bench_keeper.py [--links 10000] [--workers 1,2] [--rounds 3] [--chunk 50] [--client-loop]
                                 [--latency SECONDS] [--daemon]

``--latency`` makes the endpoint answer like a remote provider (e.g. 0.25): then a chunk's
requests outlast one send deadline, and the store check shows whether every link was
still refreshed in the one run. ``--daemon`` runs the daemon's loop (``linkctl keeper``)
instead of ``keeper --once`` until every link is refreshed: the backlog is handed to the
workers round by round, so it shows how whole the chunks stay under a backlog.

The host's speed drifts by tens of percent between minutes, so the baseline and the keeper
run in alternating rounds and each ratio compares a keeper run with the baseline run just
before it; the median and range of those ratios are printed. One worker is the like-for-like
comparison (one connection, as the baseline); more workers overlap a real provider's
latency, but against this sub-millisecond local endpoint the work is CPU-bound in one
process and the extra threads only add GIL hand-offs.
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
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from reconciler import keeper
from reconciler.domain.tokens import TokenResponse
from reconciler.oauth.client import TokenClient
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    issued_log: int = -1  # an O_APPEND fd: one issued refresh token per line
    latency: float = 0.0  # seconds each answer waits, as a remote provider's would
    disable_nagle_algorithm = True  # one-packet answers: no 40 ms delayed-ACK stalls on keep-alive

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if self.latency:
            time.sleep(self.latency)
        refresh = secrets.token_urlsafe(24)
        if self.issued_log >= 0:
            os.write(self.issued_log, f"{refresh}\n".encode())
        body = json.dumps(
            {
                "access_token": secrets.token_urlsafe(24),
                "refresh_token": refresh,
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


def _serve(port_out: Any, issued_path: str | None = None, latency: float = 0.0) -> None:
    _Handler.latency = latency
    if issued_path:
        _Handler.issued_log = os.open(issued_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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


def _verify(store: Store, n: int, issued: list[str]) -> dict[str, int]:
    """Read every grant back: refreshed once, durable, released, holding the token the server issued."""
    problems = 0
    stored: list[str] = []
    for grant in store.list_grants():
        full = store.get_grant(grant.link_name, with_tokens=True)
        ok = (
            full is not None
            and full.status == "healthy"
            and full.token_version == 2
            and full.lease_owner is None
            and full.in_flight_since is None
            and not full.lost_response
            and full.refresh_token is not None
        )
        if not ok or full is None or full.refresh_token is None:
            problems += 1
            continue
        stored.append(full.refresh_token.reveal())
    issued_set = set(issued)
    return {
        "grants": len(store.list_grants()),
        "bad_grants": problems,
        "issued": len(issued),
        "stored_distinct": len(set(stored)),
        "stored_not_issued": sum(1 for t in stored if t not in issued_set),
        "issued_not_stored": len(issued_set - set(stored)),
        "ok": int(
            problems == 0
            and len(stored) == n
            and len(issued) == n
            and set(stored) == issued_set
            and len(issued_set) == n
        ),
    }


def _keeper_child(
    n: int, workers: int, chunk: int, endpoint: str, issued_path: str, trace: bool, out: Any, daemon: bool
) -> None:
    """In a fresh process: populate, refresh everything due, measure, verify; results to ``out``.

    ``daemon``: the daemon's loop (``run_forever``, stopped once all ``n`` are refreshed)
    instead of ``run_once``: a backlog handed over round by round, as ``linkctl keeper`` does.
    """
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-") as tmp:
        settings = _settings(Path(tmp))
        store = open_store(settings, notice=lambda _: None)
        _populate(store, n, endpoint, time.time())
        assert len(store.due_links(time.time(), limit=n + 1)) == n
        Path(issued_path).write_text("")
        client = TokenClient(timeout=10, keepalive=True, max_connections=max(workers, 1))
        stop, counted, lock = threading.Event(), [0], threading.Lock()

        def count(outcome: keeper.Outcome) -> None:
            with lock:
                counted[0] += outcome.result == keeper.REFRESHED
                if counted[0] >= n:
                    stop.set()

        runner = keeper.Keeper(
            store,
            client,
            store_factory=lambda: open_store(settings, notice=lambda _: None),
            workers=workers,
            policy=keeper.KeeperPolicy(batch=1000, chunk=chunk),
            observe=count if daemon else None,
        )
        # Each chunk costs three store transactions (lease, mark, commit): counted, not changed.
        chunks: list[int] = []
        process = runner._process

        def counting(store: Store, names: list[str], owner: str) -> list[keeper.Outcome]:
            chunks.append(len(names))
            return process(store, names, owner)

        runner._process = counting  # type: ignore[method-assign]
        if trace:
            tracemalloc.start()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu0, t0 = _cpu(), time.perf_counter()
        if daemon:
            give_up = threading.Timer(600, stop.set)
            give_up.start()
            report = runner.run_forever(stop)
            give_up.cancel()
        else:
            report = runner.run_once()
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        client.close()
        refreshed = len(report.refreshed)
        issued = Path(issued_path).read_text().split()
        check = _verify(store, n, issued)
        store.close()
    out.put(
        {
            "refreshed": refreshed,
            "failed": len(report.failed),
            "durable": check["grants"] - check["bad_grants"],
            "verify": check,
            "seconds": elapsed,
            "per_second": refreshed / elapsed,
            "chunks": len(chunks),
            "cpu_ms_per_refresh": 1000 * cpu / max(refreshed, 1),
            "max_rss_mib": maxrss,
            "rss_before_run_mib": rss0,
            "peak_traced_mib": peak / 2**20,
        }
    )


def bench_keeper(
    n: int,
    workers: int,
    endpoint: str,
    issued_path: str,
    *,
    chunk: int = 50,
    trace: bool = False,
    daemon: bool = False,
) -> dict[str, Any]:
    """Refresh n due links with the Keeper (real store, leases, fencing, durable commits)."""
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    child = ctx.Process(
        target=_keeper_child, args=(n, workers, chunk, endpoint, issued_path, trace, out, daemon)
    )
    child.start()
    result: dict[str, Any] = out.get(timeout=1800)
    child.join()
    return result


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


def bench_token_client(n: int, endpoint: str) -> dict[str, float]:
    """The keeper's HTTP path alone: ``TokenClient(keepalive=True).refresh`` in a loop, no store."""
    from reconciler.domain.tokens import ClientConfig

    config = ClientConfig(
        link="bench",
        provider="custom",
        client_id="bench",
        client_secret=Secret("bench-secret"),
        client_auth="client_secret_basic",
        token_endpoint=endpoint,
    )
    refresh_token = Secret("rt")
    with TokenClient(timeout=10, keepalive=True, max_connections=1) as client:
        cpu0, t0 = _cpu(), time.perf_counter()
        for _ in range(n):
            client.refresh(config, refresh_token)
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {
        "refreshed": n,
        "seconds": elapsed,
        "per_second": n / elapsed,
        "cpu_ms_per_refresh": 1000 * cpu / n,
    }


def _workers(text: str) -> list[int]:
    """``--workers 1,2``: the keeper's worker counts to run, each in every round."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return counts


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"


def main() -> int:
    """Run the baseline and the keeper in alternating rounds; print figures and median ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument(
        "--workers",
        type=_workers,
        default=[1, 2],
        help="keeper worker threads, comma-separated; each runs in every round (default 1,2)",
    )
    parser.add_argument("--chunk", type=int, default=50, help="links per store batch (default 50)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds of baseline then keeper(s); ratios are per round (default 3)",
    )
    parser.add_argument(
        "--baseline", type=int, default=None, help="requests in the baseline (default: --links)"
    )
    parser.add_argument(
        "--trace-memory", action="store_true", help="also measure traced Python memory (untimed run)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds the endpoint waits before each answer, as a remote provider (default 0)",
    )
    parser.add_argument(
        "--client-loop",
        action="store_true",
        help="also time the keeper's HTTP path alone (TokenClient(keepalive=True), no store)",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="run the keeper's daemon loop (linkctl keeper) until all are refreshed, not keeper --once",
    )
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    traced = None
    ports: Any = multiprocessing.Queue()
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-issued-") as tmp:
        issued_path = str(Path(tmp) / "issued.txt")
        server = multiprocessing.Process(target=_serve, args=(ports, issued_path, args.latency), daemon=True)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{ports.get(timeout=10)}/token"
            for _ in range(max(1, args.rounds)):
                # Each round measures the baseline right before the keeper runs it is compared
                # with: the host's speed drifts between minutes, a ratio within a round does not.
                this: dict[str, Any] = {"baseline": bench_baseline(args.baseline or args.links, endpoint)}
                if args.client_loop:
                    this["token_client"] = bench_token_client(args.baseline or args.links, endpoint)
                for workers in args.workers:
                    this[f"keeper_{workers}"] = bench_keeper(
                        args.links, workers, endpoint, issued_path, chunk=args.chunk, daemon=args.daemon
                    )
                rounds.append(this)
            if args.trace_memory:
                traced = bench_keeper(
                    args.links, args.workers[0], endpoint, issued_path, chunk=args.chunk, trace=True
                )
        finally:
            server.terminate()
            server.join()
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cpus, python {sys.version.split()[0]}")
    mode = "daemon loop (linkctl keeper)" if args.daemon else "run_once (keeper --once)"
    print(f"{len(rounds)} rounds, each: the baseline, then the keeper's {mode} with {args.workers} worker(s)")
    if args.latency:
        print(f"endpoint latency {args.latency * 1000:.0f} ms per answer, chunk {args.chunk}")
    for index, this in enumerate(rounds, 1):
        base = this["baseline"]
        line = (
            f"round {index}: baseline (sequential httpx, keep-alive, no store)"
            f" {base['per_second']:.0f} req/s,"
            f" {base['cpu_ms_per_refresh']:.2f} ms CPU/req"
        )
        if "token_client" in this:
            line += f"; token client alone {this['token_client']['per_second']:.0f} req/s"
        for workers in args.workers:
            kept = this[f"keeper_{workers}"]
            line += (
                f"; keeper w={workers} {kept['per_second']:.0f}/s, {kept['cpu_ms_per_refresh']:.2f} ms CPU,"
                f" {kept['chunks']} chunks,"
                f" max RSS {kept['max_rss_mib']:.0f} MiB"
            )
        print(line)
    all_ok = True
    for workers in args.workers:
        checks = [this[f"keeper_{workers}"]["verify"] for this in rounds]
        ok = all(c["ok"] for c in checks) and all(
            this[f"keeper_{workers}"]["refreshed"] == args.links for this in rounds
        )
        all_ok = all_ok and ok
        worst = max(checks, key=lambda c: c["bad_grants"] + c["issued_not_stored"] + c["stored_not_issued"])
        verdict = "all done, no lost grant, no double refresh" if ok else "VERIFICATION FAILED"
        print(
            f"store check, keeper w={workers}, every round:"
            f" {worst['grants'] - worst['bad_grants']}/{args.links} grants healthy at version 2,"
            f" released, not in flight; {worst['issued']} refresh tokens issued,"
            f" {worst['stored_distinct']} distinct stored,"
            f" {worst['issued_not_stored']} issued but not stored,"
            f" {worst['stored_not_issued']} stored but never issued (worst round): {verdict}"
        )
        throughput = [t[f"keeper_{workers}"]["per_second"] / t["baseline"]["per_second"] for t in rounds]
        cpu = [
            t[f"keeper_{workers}"]["cpu_ms_per_refresh"] / t["baseline"]["cpu_ms_per_refresh"] for t in rounds
        ]
        print(
            f"ratio keeper w={workers} / baseline (same round): throughput {_spread(throughput)}x,"
            f" CPU per refresh {_spread(cpu)}x"
        )
    if traced:
        print(
            f"peak traced Python memory, keeper w={args.workers[0]} (separate run):"
            f" {traced['peak_traced_mib']:.1f} MiB"
        )
    print(
        "BENCH-JSON "
        + json.dumps({"rounds": rounds, "traced": traced, "workers": args.workers, "chunk": args.chunk})
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
