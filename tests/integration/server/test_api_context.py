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
    fds = len(os.listdir("/proc/self/fd"))
    seen: list[object] = []

    def work() -> None:
        store = ctx.store()
        assert store is not main and ctx.store() is store
        seen.append(id(store))
        store.list_links()

    for _ in range(30):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    gc.collect()
    assert len(seen) == 30
    assert len(list(ctx._opened)) == 1  # only the main thread's remains
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
    ctx.close()
    assert not list(ctx._opened)
