"""ServerContext's store connections: one per thread, and a pool thread that ends takes its own along.

Starlette's thread pool retires idle threads; their connections must not pile up for
the life of the server (each SQLite connection is file descriptors).
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from reconciler.server.context import ServerContext
from reconciler.settings import Settings
from tests.support.oracle_links import state_env


def test_connections_per_thread_do_not_outlive_their_threads(tmp_path: Path) -> None:
    ctx = ServerContext(settings=Settings.from_env(state_env(tmp_path)))
    main = ctx.store()
    assert ctx.store() is main
    seen: list[object] = []

    def work() -> None:
        store = ctx.store()
        assert store is not main and ctx.store() is store
        seen.append(id(store))
        store.list_links()

    counts = []
    for _ in range(3):
        for _ in range(40):
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
        gc.collect()
        counts.append(len(os.listdir("/proc/self/fd")))
    assert len(seen) == 120
    assert len(list(ctx._opened)) == 1  # only the main thread's remains
    # SQLite may keep a few closed connections' descriptors for reuse; they must not grow per thread.
    assert counts[2] - counts[0] < 20, counts
    ctx.close()
    assert not list(ctx._opened)
