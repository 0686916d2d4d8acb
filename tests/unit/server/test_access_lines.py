"""server.access_log.StderrLines: access lines leave together once per turn of the event loop."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest

from reconciler.server.access_log import StderrLines
from tests.support.asyncio_thread import run_in_own_loop


class _CountingStream(io.StringIO):
    """A stderr that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _stderr(monkeypatch: pytest.MonkeyPatch) -> _CountingStream:
    # Set inside the test: pytest's capture puts its own sys.stderr back after fixtures run.
    stream = _CountingStream()
    monkeypatch.setattr("sys.stderr", stream)
    return stream


def test_lines_of_one_turn_leave_in_one_write_before_the_next_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    lines = StderrLines()

    async def answer(number: int) -> None:
        lines(f"line {number}")

    async def main() -> tuple[int, str]:
        await asyncio.gather(*(answer(n) for n in range(5)))
        await asyncio.sleep(0)  # one turn later the lines are out
        return stderr.writes, stderr.getvalue()

    writes, text = run_in_own_loop(main())
    assert writes == 1
    assert text == "".join(f"line {n}\n" for n in range(5))


def test_without_a_running_loop_a_line_is_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    lines = StderrLines()
    seen: list[str] = []

    def outside_any_loop() -> None:
        # A thread of its own: the browser tests' Playwright keeps a loop running in the
        # worker's main thread, so there the line would wait for a turn that never comes.
        lines("first")
        seen.append(stderr.getvalue())
        lines("second")
        seen.append(stderr.getvalue())

    thread = threading.Thread(target=outside_any_loop)
    thread.start()
    thread.join(timeout=10)
    assert seen == ["first\n", "first\nsecond\n"]


def test_a_long_turn_writes_early_and_shutdown_writes_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    lines = StderrLines()

    async def main() -> tuple[int, int]:
        for number in range(600):  # one turn: no await gives the loop a chance
            lines(f"line {number}")
        held = stderr.getvalue().count("\n")
        lines.flush()  # what the server's shutdown does
        return held, stderr.getvalue().count("\n")

    held, written = run_in_own_loop(main())
    assert held == 512  # two full batches of 256 left early; 88 lines were still held
    assert written == 600
    assert stderr.getvalue().splitlines() == [f"line {n}" for n in range(600)]
