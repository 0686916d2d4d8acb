"""The apply lock (store contract): waiting, naming the holder, stale takeover, unlock."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from reconciler.errors import LockTimeout, StateError
from reconciler.settings import Settings
from reconciler.store.base import Store, locked
from tests.support.stores import PYTHON, child_env

OpenStore = Callable[..., Store]


def test_acquire_release_current(store: Store) -> None:
    assert store.current_lock() is None
    info = store.acquire_lock(operation="apply", timeout=1)
    assert info.pid == os.getpid()
    assert info.host == socket.gethostname()
    assert info.operation == "apply"
    assert len(info.id) == 32
    assert abs(info.since - time.time()) < 5
    assert store.current_lock() == info
    store.release_lock(info.id)
    assert store.current_lock() is None


def test_second_acquire_times_out_naming_the_holder(open_: OpenStore) -> None:
    holder_store, waiter = open_(), open_()
    held = holder_store.acquire_lock(operation="apply", timeout=1)
    started = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        waiter.acquire_lock(operation="reconcile", timeout=0.4)
    waited = time.monotonic() - started
    assert 0.35 <= waited < 30  # waited for the timeout, then gave up (upper bound: a loaded CI)
    message = str(info.value)
    since = datetime.datetime.fromtimestamp(held.since, tz=datetime.UTC).isoformat(timespec="seconds")
    assert f"pid {held.pid}" in message
    assert f"host {held.host}" in message
    assert "'apply'" in message
    assert since in message
    assert info.value.hint is not None and f"linkctl state unlock {held.id}" in info.value.hint
    assert info.value.exit_code == 4
    holder_store.release_lock(held.id)
    again = waiter.acquire_lock(operation="reconcile", timeout=0.1)
    assert again.operation == "reconcile"


def test_acquire_waits_for_release(open_: OpenStore, settings: Settings) -> None:
    script = (
        "import os, time\n"
        "from reconciler.settings import Settings\n"
        "from reconciler.store import open_store\n"
        "s = open_store(Settings.from_env(os.environ))\n"
        "info = s.acquire_lock(operation='apply', timeout=5)\n"
        "print('held', flush=True)\n"
        "time.sleep(0.5)\n"
        "s.release_lock(info.id)\n"
    )
    store = open_()
    child = subprocess.Popen(
        [PYTHON, "-c", script], env=child_env(settings), stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    started = time.monotonic()
    info = store.acquire_lock(operation="apply", timeout=30)
    assert 0.1 < time.monotonic() - started < 10
    assert info.pid == os.getpid()
    assert child.wait(timeout=30) == 0


def test_stale_lock_of_a_dead_process_is_taken_over(
    open_: OpenStore, settings: Settings, notices: list[str]
) -> None:
    script = (
        "import os\n"
        "from reconciler.settings import Settings\n"
        "from reconciler.store import open_store\n"
        "s = open_store(Settings.from_env(os.environ))\n"
        "info = s.acquire_lock(operation='apply', timeout=5)\n"
        "print(info.id, flush=True)\n"
        "os._exit(0)  # dies holding the lock\n"
    )
    store = open_()
    notices.clear()
    done = subprocess.run(
        [PYTHON, "-c", script],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dead_id = done.stdout.strip()
    dead = store.current_lock()
    assert dead is not None and dead.id == dead_id and dead.pid != os.getpid()
    info = store.acquire_lock(operation="apply", timeout=0.5)
    assert info.pid == os.getpid() and info.id != dead_id
    assert store.current_lock() == info
    assert len(notices) == 1
    assert f"stale apply lock {dead_id} from pid {dead.pid}" in notices[0]


def test_force_unlock(open_: OpenStore, notices: list[str]) -> None:
    one, two = open_(), open_()
    held = one.acquire_lock(operation="apply", timeout=1)
    with pytest.raises(StateError, match=f"no apply lock with id 'nope' \\(the current lock is {held.id}\\)"):
        two.force_unlock("nope")
    assert two.force_unlock(held.id) == held
    assert two.current_lock() is None
    with pytest.raises(StateError, match="no lock is held"):
        two.force_unlock(held.id)
    notices.clear()
    one.release_lock(held.id)  # the original holder finishing later is not an error
    assert len(notices) == 1 and "already gone" in notices[0]


def test_locked_context_manager_releases_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), locked(store, operation="apply", timeout=1):
        assert store.current_lock() is not None
        raise RuntimeError
    assert store.current_lock() is None
