#!/usr/bin/env python3
"""Benchmark what operations cost per look at a store of N links: a /metrics scrape, a notifier pass.

In-process, on a real SQLite store of N links (tokens set by one SQL update, not N
authorizations). Figures, each the median of ``--repeat`` runs:

* ``link_states``: the one query both the scrape and the notifier read;
* ``scrape cold``: ``Metrics.render()`` when its 2 s snapshot has expired (query + text);
* ``scrape warm``: the same within the snapshot's life (text only);
* ``peer``: prometheus_client rendering a plain registry with the same number of series
  (``Gauge`` children set by hand): the library's own floor, our ratio to it printed;
* ``notify idle``: ``record_status_changes`` when nothing changed (every 2 s in each
  keeper and serve process);
* ``notify 1 %``: the same when 1 % of the links changed status (one target: enqueue).

    python bench/bench_ops.py              # N = 10,000
    python bench/bench_ops.py --n 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from reconciler.domain.notify import NOTIFIED_STATUSES
from reconciler.secrets import Secret
from reconciler.server.metrics import Metrics, StoreSnapshot
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store


def _populate(store: Store, db: Path, n: int, now: float) -> None:
    spec: dict[str, Any] = {"provider": "custom", "clientId": "bench", "scopes": ["read"]}
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
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE grants SET status = 'healthy', access_expires_at = ?", (now + 3600,))
    conn.close()


def _median(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as scratch:
        tmp = Path(scratch)
        key = base64.b64encode(os.urandom(32)).decode()
        settings = Settings.from_env(
            {"HOME": str(tmp), "LINKCTL_STATE": f"sqlite:///{tmp / 'state.db'}", "LINKCTL_STATE_KEY": key}
        )
        store = open_store(settings, notice=lambda _: None)
        now = time.time()
        _populate(store, tmp / "state.db", args.n, now)

        def snapshot() -> StoreSnapshot:
            return StoreSnapshot(store.link_states(), store.delivery_backlog(), time.time())

        clock = [time.time()]
        metrics = Metrics(snapshot, clock=lambda: clock[0])
        metrics.observe_request(200)

        def cold() -> None:
            clock[0] += 10  # the snapshot expired
            metrics.render()

        text = metrics.render()
        series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
        peer_registry = CollectorRegistry()
        gauge = Gauge("peer_series", "peer", ["link", "status"], registry=peer_registry)
        for i in range(series):
            gauge.labels(f"link-{i:05d}", "healthy").set(i)

        def render_body(change: Any) -> str:
            return json.dumps({"link": change.link})

        def detect() -> None:
            store.record_status_changes(
                now=time.time(), targets=["t"], render=render_body, announced=NOTIFIED_STATUSES
            )

        detect()  # the baseline
        changed = max(1, args.n // 100)
        conn = sqlite3.connect(tmp / "state.db")

        def one_percent() -> None:
            with conn:
                conn.execute(
                    "UPDATE grants SET status ="
                    " CASE status WHEN 'healthy' THEN 'transient_error' ELSE 'healthy' END"
                    " WHERE link_uid IN (SELECT uid FROM links ORDER BY name LIMIT ?)",
                    (changed,),
                )
            start = time.perf_counter()
            detect()
            timings.append(time.perf_counter() - start)

        timings: list[float] = []
        for _ in range(args.repeat):
            one_percent()
        conn.close()
        figures = {
            "link_states": _median(store.link_states, args.repeat),
            "scrape cold": _median(cold, args.repeat),
            "scrape warm": _median(metrics.render, args.repeat),
            "peer": _median(lambda: generate_latest(peer_registry), args.repeat),
            "notify idle": _median(detect, args.repeat),
            "notify 1 %": statistics.median(timings),
        }
        store.close()
    print(
        f"# bench_ops: N = {args.n} links, {series} series, {len(text) / 1e6:.2f} MB per scrape;"
        f" {platform.python_version()} on {os.cpu_count()} cores, median of {args.repeat}"
    )
    for name, seconds in figures.items():
        print(f"{args.n:>7} {name:<12} {seconds * 1000:9.1f} ms")
    print(f"ratio scrape warm / peer: {figures['scrape warm'] / figures['peer']:.2f}")
    print(f"ratio scrape cold / peer: {figures['scrape cold'] / figures['peer']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
