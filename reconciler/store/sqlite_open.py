"""Opening the SQLite store file: URL rules, file checks, connection set-up, schema and key probes.

Everything here runs before (or instead of) a :class:`reconciler.store.sqlite.SQLiteStore`
exists: the ``sqlite:///`` URL convention, refusing files that are not ours (another
program's database, a foreign owner, group/world-writable), creating the file private,
connecting with ``busy_timeout`` and WAL (retrying the first switch while concurrent
first opens hold the file), reading the schema version and key check, and the hint a
SQLite failure gets.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.errors import StateError
from reconciler.store import sealing
from reconciler.store.schema import latest_version

Notice = Callable[[str], None]

BUSY_TIMEOUT_MS = 30_000


def sqlite_path(url: str) -> Path:
    """The absolute file path of a SQLite state URL (SQLAlchemy's convention).

    ``sqlite:///state.db`` is relative to the working directory, ``sqlite:////abs/state.db``
    is absolute. A relative URL whose file is absent while the same path from ``/`` exists
    is refused: that is a URL written for linkctl's older reading (three slashes meant absolute).
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or "#" in url:
        raise StateError(
            f"not a SQLite state URL: {url!r}",
            hint=f"use {URL_FORMS} (after the scheme, three slashes, then the path)",
        )
    rest = url[len(prefix) :]
    path = Path(rest) if rest.startswith("/") else Path.cwd() / rest
    if path.name in ("", ".", "..") or url.endswith("/"):
        raise StateError(
            f"the SQLite state URL {url!r} names a directory, not a file",
            hint=f"use {URL_FORMS}",
        )
    if not rest.startswith("/") and not path.exists() and Path("/" + rest).exists():
        raise StateError(
            f"the state URL {url!r} names {path} (relative to the working directory), which does"
            f" not exist, while /{rest} does",
            hint=f"for the absolute path write sqlite:////{rest} (four slashes); for a new store here,"
            " create the directory or give the absolute path",
        )
    return path


URL_FORMS = "sqlite:////absolute/path/state.db or sqlite:///path/relative/to/cwd.db"


def warn_if_shared(path: Path, what: str, say: Notice) -> None:
    """Refuse a file holding secrets that another user controls; warn when others can read it.

    Owned by someone other than this user (or root), or writable by group or others, it can
    have been planted or replaced (a key that seals our secrets for them, a store that redirects
    a token endpoint): refused. Only readable by others: a warning, as before.
    """
    try:
        info = path.stat()
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (os.geteuid(), 0):
        raise StateError(
            f"{what} {path} is owned by another user (uid {info.st_uid}, this is uid {os.geteuid()})",
            hint=f"linkctl trusts only files of this user or root: `chown {os.geteuid()} {path}` if yours",
        )
    if mode & 0o022:
        raise StateError(
            f"{what} {path} is writable by other users (mode {mode:04o}), so it may have been replaced",
            hint=f"check its content, then run `chmod 600 {path}`",
        )
    if mode & 0o077:
        say(f"{what} {path} is accessible by other users (mode {mode:04o}); run `chmod 600 {path}`")


def create_private_file(path: Path) -> None:
    """Create an empty store file with mode 0600 (parents 0700); fine if it appears meanwhile."""
    try:
        sealing.make_private_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(
            f"cannot create the store file {path}: {exc.strerror}",
            hint=f"make {path.parent} writable by this user, or pick another place (--state, LINKCTL_STATE)",
        ) from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def refuse_unless_store(path: Path) -> None:
    """Refuse a file that is not a linkctl store (corrupted, truncated, another program's database).

    Looked at read-only, before anything writes to it: linkctl never adds its tables to
    another database nor switches it to WAL.
    """
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return  # a directory is refused later; an empty file is a store being created
    except OSError:
        return
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"cannot open the store {path}: {exc}", hint=hint_for(str(exc), path)) from None
    try:
        tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return  # a store another process is creating (WAL on, no tables yet)
        has_version = (
            "meta" in tables and probe.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone()
        )
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc):
            has_version = False
        else:
            raise StateError(f"cannot read the store {path}: {exc}", hint=hint_for(str(exc), path)) from None
    except sqlite3.DatabaseError as exc:
        raise StateError(f"cannot read the store {path}: {exc}", hint=hint_for(str(exc), path)) from None
    finally:
        probe.close()
    if not has_version:
        shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        raise StateError(
            f"{path} is a SQLite database but not a linkctl store (tables: {shown}; no linkctl metadata)",
            hint="point --state / LINKCTL_STATE at a linkctl store or at a new file;"
            " linkctl never adds its tables to another database, and nothing was changed",
        )


def store_failure(error: sqlite3.DatabaseError, url: str) -> StateError:
    """A SQLite failure met while using the store, as the error the user sees (file and what to do)."""
    try:
        path = sqlite_path(url)
    except StateError:
        return StateError(f"the store {url} failed: {error}", hint="check LINKCTL_STATE / --state")
    return StateError(f"the store {path} failed: {error}", hint=hint_for(str(error), path))


def hint_for(reason: str, path: Path) -> str:
    """What to do about a SQLite failure on the store file, by its reason."""
    reason = reason.lower()
    if "full" in reason:
        return (
            f"free space on the file system holding {path} (nothing was written: the transaction rolled back)"
        )
    if "readonly" in reason or "read-only" in reason or "unable to open" in reason or "permission" in reason:
        return f"make {path} and its directory {path.parent} writable (and readable) by this user"
    if "not a database" in reason or "malformed" in reason or "corrupt" in reason:
        return (
            f"{path} is damaged: restore it from your backup (or move it aside to start empty and"
            " apply again; authorizations would be lost)"
        )
    return "check LINKCTL_STATE / --state and the file's permissions"


def ready_as_is(path: Path) -> bool:
    """True if opening ``path`` would write nothing: WAL already on, schema current, key check there.

    Looked at through a read-only connection, because the normal one switches the file
    to WAL journaling, which is a write to a file that may not even be a store.
    """
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except (sqlite3.Error, ValueError):
        return False
    try:
        mode = probe.execute("PRAGMA journal_mode").fetchone()[0]
        version, key_check = read_meta(probe)
    except (sqlite3.Error, StateError):
        return False
    finally:
        probe.close()
    return str(mode).lower() == "wal" and version == latest_version() and key_check is not None


def connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the store {path}: {exc}", hint=hint_for(str(exc), path)) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = _switch_to_wal(conn)
        if str(mode).lower() != "wal":
            raise StateError(f"the store {path} cannot use WAL journaling (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StateError(f"cannot open the store {path}: {exc}", hint=hint_for(str(exc), path)) from None
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Turn WAL on, retrying with bounded backoff while concurrent first opens hold the file.

    Switching the journal mode of a brand-new file can fail with "database is locked"
    without SQLite calling the busy handler, so ``busy_timeout`` alone does not cover
    several processes creating the same store at once.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def refuse_newer_schema(path: Path, version: int, known: int) -> None:
    """Refuse a store whose schema is newer than the migrations this linkctl knows."""
    if version > known:
        raise StateError(
            f"the store {path} has schema version {version}, newer than this linkctl understands ({known})",
            hint="upgrade linkctl; an older version must not write to a newer store",
        )


def read_meta(conn: sqlite3.Connection) -> tuple[int, bytes | None]:
    """``(schema_version, key_check)`` of a store; ``(0, None)`` for a new file."""
    try:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return 0, None
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('schema_version', 'key_check')"))
    except sqlite3.DatabaseError as exc:
        raise StateError(f"cannot read the store: {exc}", hint="is it a linkctl SQLite state file?") from None
    return int(rows.get("schema_version") or 0), rows.get("key_check")
