"""Input files: expanding arguments into files (directories walked) and reading each once."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from reconciler.diagnostics import ERROR, Diagnostic
from reconciler.load.parse import ParseOutcome
from reconciler.load.parse_cache import ParseCache

EXTENSIONS = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 16 * 1024 * 1024


def iter_files(paths: Iterable[str]) -> Iterator[tuple[str, Path | None, str | None]]:
    """Expand arguments into (display name, path, problem) — directories recursively, sorted."""
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            yield from _scan_directory(path)
        elif path.is_file() or path.exists():  # a FIFO or device: reading it says what it is
            yield str(path), path, None
        else:
            yield arg, None, "no such file or directory"


def _scan_directory(root: Path) -> Iterator[tuple[str, Path | None, str | None]]:
    """Every declared file under ``root``: hidden entries skipped, symlinked directories followed.

    A directory that cannot be listed is reported like an unreadable file, since skipping it would
    make ``--prune`` delete the links it declares. Each directory is entered once by
    (st_dev, st_ino), which stops symlink loops and reads a directory linked twice only once.
    """
    found: list[Path] = []
    problems: list[tuple[str, Path | None, str | None]] = []
    visited: set[tuple[int, int]] = set()

    def scan(directory: Path) -> None:
        try:
            info = directory.stat()
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            problems.append((str(directory), None, f"cannot read directory: {exc.strerror or exc}"))
            return
        if (info.st_dev, info.st_ino) in visited:
            return
        visited.add((info.st_dev, info.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = directory / entry.name
            try:
                is_dir = entry.is_dir()
            except OSError as exc:  # a symlink loop (ELOOP) or a target we may not stat
                problems.append((str(child), None, f"cannot read: {exc.strerror or exc}"))
                continue
            if is_dir:
                scan(child)
            elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
                # A FIFO, device or dangling link is refused when it is read, not skipped:
                # a skipped file's links would look deleted to --prune.
                found.append(child)

    scan(root)
    for p in sorted(found):
        yield str(p), p, None
    yield from problems


def read_once(
    found: Iterable[tuple[str, Path | None, str | None]],
) -> Iterator[tuple[str, Path | None, str | None]]:
    """Drop files already listed: the same file named twice (by another path, a symlink, or a
    directory and the file in it) would otherwise declare each of its links twice."""
    seen: set[tuple[int, int]] = set()
    for display, path, problem in found:
        if path is not None:
            try:
                st = path.stat()
            except OSError:
                yield display, path, problem  # reading it reports the problem
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        yield display, path, problem


@dataclasses.dataclass
class InputFile:
    """One input file between reading and loading."""

    display: str
    path: Path
    text: str | None  # None: unreadable, see ``problems``
    problems: list[Diagnostic] = dataclasses.field(default_factory=list)
    parsed: ParseOutcome | None = None  # from the parse cache or a parse ahead
    encoded: bytes | None = None  # ``parsed`` in the cache's encoding, when the child made it
    key: str = ""  # the parse cache's key of ``text``, when there is a cache

    @property
    def cached(self) -> bool:
        """``parsed`` came from the cache (nothing to remember): the child's parses are encoded."""
        return self.parsed is not None and self.encoded is None


def read_file(display: str, path: Path, cache: ParseCache | None) -> InputFile:
    """Read a file's text (size limit, UTF-8) and look its parse up in the cache."""

    def fail(
        message: str, line: int | None = None, column: int | None = None, *, hint: str, code: str
    ) -> InputFile:
        problem = Diagnostic(ERROR, message, display, line, column, (), hint, code)
        return InputFile(display, path, None, [problem])

    try:
        # O_NONBLOCK and fstat: a FIFO or device named as an argument must not block or stream.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                return fail(
                    "not a regular file (a FIFO, socket or device)",
                    hint="name a YAML or JSON file",
                    code="not-a-file",
                )
            if st.st_size > MAX_FILE_BYTES:
                return fail(
                    f"file is {st.st_size} bytes, over the {MAX_FILE_BYTES} byte limit",
                    hint="split it into several files",
                    code="too-large",
                )
            text = handle.read(MAX_FILE_BYTES + 1).decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = exc.object[: exc.start]
        return fail(
            f"file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            raw.count(b"\n") + 1,
            exc.start - (raw.rfind(b"\n") + 1) + 1,
            hint="save the file as UTF-8",
            code="encoding",
        )
    except OSError as exc:
        problem = Diagnostic(ERROR, f"cannot read file: {exc.strerror}", display, None, None, (), None, "io")
        return InputFile(display, path, None, [problem])
    if cache is None:
        return InputFile(display, path, text)
    key = cache.key(text)  # once: looked up now, written after validation
    return InputFile(display, path, text, parsed=cache.get(key, display), key=key)
