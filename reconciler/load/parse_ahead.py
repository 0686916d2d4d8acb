"""Forked parse-ahead: a child parses part of the files while this process parses the rest."""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from reconciler.load import parse
from reconciler.load.documents import LoadResult
from reconciler.load.files import InputFile
from reconciler.load.parse import ParseOutcome
from reconciler.load.parse_cache import ParseCache

# Parsing is the costliest step of a cold plan: with two free cores and at least this much
# unparsed YAML, a forked child parses part of the files while this process parses the rest.
PARSE_AHEAD_MIN_BYTES = 256 * 1024
PARSE_AHEAD_SHARE = 0.5  # the child's share by bytes; this process also builds the documents
MEANWHILE_SHARE = 0.25  # more for the child while this process imports and reads the store


class ParseAhead:
    """Parses of some files, made by a forked child while this process parses the others.

    The child inherits the file texts (copy-on-write), so both sides parse exactly the same
    bytes; it sends back the parse-cache encoding over a pipe. Anything missing or damaged
    in what comes back is parsed here instead, so a failed child costs time, never results.
    """

    def __init__(self, files: Sequence[InputFile] = ()) -> None:
        self.names = frozenset(f.display for f in files)
        self._pid: int | None = None
        self._read_fd: int | None = None
        self._results: dict[str, bytes | None] | None = None
        if files:
            self._start(files)

    def _start(self, files: Sequence[InputFile]) -> None:
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            self.names = frozenset()  # out of descriptors: parse everything here
            return
        try:
            pid = os.fork()
        except OSError:  # a process limit (EAGAIN) or no memory: parse everything here
            os.close(read_fd)
            os.close(write_fd)
            self.names = frozenset()
            return
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            try:
                os.close(read_fd)
                out: dict[str, bytes | None] = {}
                for file in files:
                    assert file.text is not None
                    outcome = parse.parse_text(file.display, file.path, file.text, LoadResult([], [], [], []))
                    out[file.display] = None if outcome is None else ParseCache.encode(*outcome)
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(marshal.dumps(out))
            finally:
                os._exit(0)
        os.close(write_fd)
        self._pid, self._read_fd = pid, read_fd

    def result(self, display: str) -> tuple[ParseOutcome, bytes] | None:
        """The child's parse of ``display`` and its encoding (``None``: parse it here)."""
        if self._results is None:
            self._results = self._collect()
        blob = self._results.get(display)
        outcome = None if blob is None else ParseCache.decode(blob, display)
        return None if outcome is None or blob is None else (outcome, blob)

    def _collect(self) -> dict[str, bytes | None]:
        if self._read_fd is None:
            return {}
        with os.fdopen(self._read_fd, "rb") as pipe:
            self._read_fd = None
            data = pipe.read()
        self.close()
        try:
            results = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return {}
        return results if isinstance(results, dict) else {}

    def close(self) -> None:
        """Reap the child; one whose answer is no longer wanted (an error here) is killed first."""
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None
            if self._pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
        if self._pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None


def start_parse_ahead(misses: Sequence[InputFile], share: float, *, busy: bool) -> ParseAhead:
    """Start a child for the tail of ``misses`` (about ``share`` of their bytes) when worth a fork.

    ``busy``: this process has other work meanwhile, so the child may take every file.
    """
    total = sum(len(f.text or "") for f in misses)
    if total < PARSE_AHEAD_MIN_BYTES or not hasattr(os, "fork") or threading.active_count() > 1:
        return ParseAhead()
    if usable_cpus() < 2:
        return ParseAhead()
    # The child takes the last files (this process reaches them last), as close to its share
    # as whole files allow.
    wanted, taken = total * share, 0
    tail: list[InputFile] = []
    for file in reversed(misses):
        size = len(file.text or "")
        if taken + size - wanted > wanted - taken:
            break
        tail.append(file)
        taken += size
    if not tail or (len(tail) == len(misses) and not busy):
        return ParseAhead()  # nothing to share: one process would wait for the other
    return ParseAhead(tail[::-1])


def usable_cpus() -> int:
    """CPUs this process may run on, within a cgroup v2 CPU quota (containers, CI runners)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus
