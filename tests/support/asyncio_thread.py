"""Running a coroutine from a sync test when the worker's main thread may already run a loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run_in_own_loop(coroutine: Coroutine[Any, Any, _T], *, timeout: float = 30) -> _T:
    """Run ``coroutine`` to its end on a fresh event loop in a thread of its own.

    The browser tests' session-wide Playwright (sync API) keeps an event loop running in the
    main thread of the same pytest worker, where ``asyncio.run`` then refuses to start.
    """
    failures: list[BaseException] = []
    results: list[_T] = []

    def run() -> None:
        try:
            results.append(asyncio.run(coroutine))
        except BaseException as error:  # re-raised in the test's thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=timeout)
    assert not thread.is_alive(), f"the coroutine did not finish within {timeout} s"
    if failures:
        raise failures[0]
    return results[0]
