"""Benchmark: the PostgreSQL store next to SQLite in one run — keeper, keeper scaling, plan/apply.

1. The 10,000-link keeper benchmark (bench/bench_keeper.py's machinery: a fast local token
   endpoint in a child process, the keeper in a fresh child, every grant read back and
   checked against the refresh tokens the server issued) on SQLite, then on PostgreSQL.
2. Keeper scaling on PostgreSQL: 1, 2 and 4 keeper processes (the same per-keeper
   concurrency: ``--workers`` threads each) share N due links against an endpoint that
   answers after 50 ms, as real token endpoints do (50-200 ms). Reported: refreshes/s,
   the ratio to one keeper, each keeper's share and the machine's CPU use (where 2 cores
   saturate).
3. The plan/apply benchmark (bench/bench_core.py's machinery: validate, plan, apply, no-op
   plan, 1 % changed) for 10,000 links on SQLite and on PostgreSQL.

PostgreSQL: a scratch database on ``--pg`` (default the local test server), created and
dropped by this script. Run::

    python bench/bench_postgres.py [--links 10000] [--scale-links 1200] [--workers 4]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core
import bench_keeper
import psycopg

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.settings import Settings
from reconciler.store import open_store

SLOW_ANSWER = 0.05  # seconds the "real" endpoint takes


class _SlowHandler(bench_keeper._Handler):
    def do_POST(self) -> None:
        time.sleep(SLOW_ANSWER)
        super().do_POST()


def _serve(port_out: Any, issued_path: str, slow: bool) -> None:
    bench_keeper._Handler.issued_log = os.open(issued_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler if slow else bench_keeper._Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    port_out.put(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def endpoint(issued_path: str, *, slow: bool) -> Iterator[str]:
    """A local token endpoint in a child process (fast, or answering after 50 ms)."""
    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports, issued_path, slow), daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=10)}/token"
    finally:
        server.terminate()
        server.join()


@contextlib.contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    """A fresh database on the server of ``admin``; dropped afterwards."""
    name = f"linkctl_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _settings(url: str, key: str, home: str) -> Settings:
    return Settings.from_env({"HOME": home, "LINKCTL_STATE": url, "LINKCTL_STATE_KEY": key})


def _keeper_child(url: str, key: str, home: str, workers: int, go: Any, out: Any) -> None:
    """One keeper process: wait for the start signal, refresh whatever it can claim, report."""
    settings = _settings(url, key, home)
    store = open_store(settings, notice=lambda _: None)
    client = TokenClient(timeout=10, keepalive=True, max_connections=workers)
    runner = keeper.Keeper(
        store,
        client,
        store_factory=lambda: open_store(settings, notice=lambda _: None),
        workers=workers,
        policy=keeper.KeeperPolicy(batch=200, chunk=10),
    )
    go.wait()
    cpu0, started = bench_keeper._cpu(), time.time()
    report = runner.run_once()
    out.put(
        {
            "refreshed": len(report.refreshed),
            "failed": len(report.failed),
            "started": started,
            "ended": time.time(),
            "cpu": bench_keeper._cpu() - cpu0,
        }
    )
    client.close()
    store.close()


def _machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def bench_scaling(admin: str, n: int, keepers: int, workers: int) -> dict[str, Any]:
    """``keepers`` processes share ``n`` due links against the 50 ms endpoint."""
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="linkctl-bench-") as tmp,
        scratch_database(admin) as url,
        endpoint(str(Path(tmp) / "issued.txt"), slow=True) as token_url,
    ):
        key = base64.b64encode(os.urandom(32)).decode()
        store = open_store(_settings(url, key, tmp), notice=lambda _: None)
        bench_keeper._populate(store, n, token_url, time.time())
        go, out = ctx.Event(), ctx.Queue()
        children = [
            ctx.Process(target=_keeper_child, args=(url, key, tmp, workers, go, out)) for _ in range(keepers)
        ]
        for child in children:
            child.start()
        time.sleep(3 + keepers)  # every child imported, connected, waiting
        busy0, wall0 = _machine_cpu(), time.time()
        go.set()
        results = [out.get(timeout=900) for _ in children]
        busy, wall = _machine_cpu() - busy0, time.time() - wall0
        for child in children:
            child.join()
        issued = (Path(tmp) / "issued.txt").read_text().split()
        check = bench_keeper._verify(store, n, issued)
        store.close()
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    refreshed = sum(r["refreshed"] for r in results)
    return {
        "keepers": keepers,
        "workers": workers,
        "refreshed": refreshed,
        "seconds": seconds,
        "per_second": refreshed / seconds,
        "split": sorted((r["refreshed"] for r in results), reverse=True),
        "machine_cpu_cores_busy": busy / wall,
        "keeper_cpu_ms_per_refresh": 1000 * sum(r["cpu"] for r in results) / max(refreshed, 1),
        "ok": bool(check["ok"]) and refreshed == n,
    }


def _fast_child(url: str, n: int, workers: int, endpoint_url: str, issued_path: str, out: Any) -> None:
    """bench_keeper's keeper child with the state at ``url``: populate, refresh all, verify."""
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-") as tmp:
        settings = _settings(url.replace("{tmp}", tmp), base64.b64encode(os.urandom(32)).decode(), tmp)
        store = open_store(settings, notice=lambda _: None)
        bench_keeper._populate(store, n, endpoint_url, time.time())
        Path(issued_path).write_text("")
        client = TokenClient(timeout=10, keepalive=True, max_connections=workers)
        runner = keeper.Keeper(
            store,
            client,
            store_factory=lambda: open_store(settings, notice=lambda _: None),
            workers=workers,
            policy=keeper.KeeperPolicy(batch=1000, chunk=50),
        )
        cpu0, t0 = bench_keeper._cpu(), time.perf_counter()
        report = runner.run_once()
        elapsed, cpu = time.perf_counter() - t0, bench_keeper._cpu() - cpu0
        client.close()
        check = bench_keeper._verify(store, n, Path(issued_path).read_text().split())
        store.close()
    refreshed = len(report.refreshed)
    out.put(
        {
            "refreshed": refreshed,
            "seconds": elapsed,
            "per_second": refreshed / elapsed,
            "cpu_ms_per_refresh": 1000 * cpu / max(refreshed, 1),
            "verify": check,
        }
    )


def bench_fast_keeper(url: str, n: int, workers: int) -> dict[str, Any]:
    """bench_keeper's 10,000-link run (fast endpoint) on the store at ``url``, in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-issued-") as tmp:
        issued = str(Path(tmp) / "issued.txt")
        with endpoint(issued, slow=False) as token_url:
            out: Any = ctx.Queue()
            child = ctx.Process(target=_fast_child, args=(url, n, workers, token_url, issued, out))
            child.start()
            result: dict[str, Any] = out.get(timeout=1800)
            child.join()
            return result


def bench_plan_apply(url: str, n: int, times: int) -> dict[str, bench_core.Measure]:
    """bench_core's steps for ``n`` links with the state at ``url``."""
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-core-") as tmp:
        state = url.replace("{tmp}", tmp)
        # bench_linkctl names an SQLite file in its environment; its steps run with our URL.
        real_measure = bench_core.measure

        def measure(cmd: list[str], env: dict[str, str], times: int = 1, cwd: Path | None = None) -> Any:
            return real_measure(cmd, {**env, "LINKCTL_STATE": state}, times, cwd)

        bench_core.measure = measure
        try:
            return bench_core.bench_linkctl(n, Path(tmp), times)
        finally:
            bench_core.measure = real_measure


def main() -> int:
    """Run the three parts and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=10_000, help="keeper and plan/apply links")
    parser.add_argument("--scale-links", type=int, default=1200, help="links of each scaling run")
    parser.add_argument("--workers", type=int, default=4, help="threads per keeper in the scaling runs")
    parser.add_argument(
        "--keeper-workers", type=int, default=2, help="threads of the one keeper in the fast-endpoint runs"
    )
    parser.add_argument("--times", type=int, default=3, help="repeats of the steps that change nothing")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--skip", action="append", default=[], choices=("keeper", "scaling", "plan"))
    args = parser.parse_args()
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cpus, load {os.getloadavg()}")
    results: dict[str, Any] = {}
    ok = True
    if "keeper" not in args.skip:
        sqlite = bench_fast_keeper("sqlite:///{tmp}/state.db", args.links, args.keeper_workers)
        with scratch_database(args.pg) as url:
            pg = bench_fast_keeper(url, args.links, args.keeper_workers)
        results["keeper"] = {"sqlite": sqlite, "postgresql": pg}
        for name, r in (("sqlite", sqlite), ("postgresql", pg)):
            ok &= bool(r["verify"]["ok"])
            print(
                f"keeper ({args.keeper_workers} workers), fast endpoint, {name}:"
                f" {r['per_second']:.0f} durable refreshes/s"
                f" ({r['refreshed']} links, {r['cpu_ms_per_refresh']:.2f} ms CPU/refresh,"
                f" check {'ok' if r['verify']['ok'] else 'FAILED'})"
            )
        print(f"ratio postgresql/sqlite: {pg['per_second'] / sqlite['per_second']:.2f}x")
    if "scaling" not in args.skip:
        runs = [bench_scaling(args.pg, args.scale_links, k, args.workers) for k in (1, 2, 4)]
        results["scaling"] = runs
        for r in runs:
            ok &= r["ok"]
            print(
                f"scaling, 50 ms endpoint, {r['keepers']} keeper(s) x {r['workers']} workers:"
                f" {r['per_second']:.0f} refreshes/s ({r['per_second'] / runs[0]['per_second']:.2f}x one),"
                f" split {r['split']}, machine CPU {r['machine_cpu_cores_busy']:.2f} cores busy,"
                f" {r['keeper_cpu_ms_per_refresh']:.2f} ms keeper CPU/refresh"
                f" ({'ok' if r['ok'] else 'CHECK FAILED'})"
            )
    if "plan" not in args.skip:
        sqlite_steps = bench_plan_apply("sqlite:///{tmp}/state.db", args.links, args.times)
        with scratch_database(args.pg) as url:
            pg_steps = bench_plan_apply(url, args.links, args.times)
        results["plan"] = {
            "sqlite": {k: vars(v) for k, v in sqlite_steps.items()},
            "postgresql": {k: vars(v) for k, v in pg_steps.items()},
        }
        for step, measured in sqlite_steps.items():
            other = pg_steps[step]
            print(
                f"{args.links} links, {step}: sqlite {measured.wall:.2f} s, postgresql {other.wall:.2f} s"
                f" ({other.wall / measured.wall:.2f}x), RSS {other.rss:.0f} MiB"
            )
    print("BENCH-JSON " + json.dumps(results, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
