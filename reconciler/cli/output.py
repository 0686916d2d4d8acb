"""The CLI's edge: a per-invocation context, JSON output, and error rendering.

Every :class:`~reconciler.errors.LinkctlError` is rendered here, once, with its
hint, and mapped to its exit code; anything else is an internal error (exit 1)
whose traceback only ``--debug`` shows.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, overload

from reconciler.errors import EXIT_ERROR, InvalidConfiguration, LinkctlError

if TYPE_CHECKING:
    import argparse  # only for types: `linkctl token NAME` runs without importing argparse

    from reconciler.settings import Settings
    from reconciler.store import MetadataCacheOpener
    from reconciler.store.base import Store

Handler = Callable[["argparse.Namespace", "Context"], int]


class Context:
    """What a command handler may use: arguments, environment, streams, the store.

    A plain class, not a dataclass: importing :mod:`dataclasses` (with :mod:`inspect`) is
    6 ms of every ``linkctl token``, whose budget is 60 ms.
    """

    def __init__(
        self, *, args: argparse.Namespace, env: Mapping[str, str], stdout: TextIO, stderr: TextIO
    ) -> None:
        self.args = args
        self.env = env
        self.stdout = stdout
        self.stderr = stderr
        self._store: Store | None = None
        self._held_notices: list[str] = []

    @property
    def settings(self) -> Settings:
        """Settings resolved from flags and environment."""
        from reconciler.settings import Settings

        return Settings.from_env(
            self.env,
            state_url=getattr(self.args, "state", None),
            lock_timeout=getattr(self.args, "lock_timeout", None),
        )

    def store(self) -> Store:
        """Open the store once per invocation."""
        if self._store is None:
            from reconciler.store import open_store

            handler = getattr(self.args, "handler", None)
            writes_when = getattr(handler, "writes_when", None)
            read_only = getattr(handler, "reads_only", False) and not (
                writes_when and getattr(self.args, writes_when, None)
            )
            self._store = open_store(self.settings, notice=self.notice, read_only=read_only)
        for text in self._held_notices:  # from ready_store(), said where the command opens the store
            self.notice(text)
        self._held_notices.clear()
        return self._store

    def ready_store(self) -> Store | None:
        """The store if it can be opened without writing anything; else ``None``.

        For reading ahead: nothing is said yet. What opening it has to say waits for
        :meth:`store`, which a command calls only once its input is valid, and a store
        that is not ready is opened (or refused, with the reason) there as before.
        """
        if self._store is None:
            from reconciler.store import open_store

            try:
                self._store = open_store(self.settings, notice=self._held_notices.append, create=False)
            except Exception:  # store() raises it again where the command opens it
                self._held_notices.clear()
                return None
        return self._store

    def metadata_cache(self) -> MetadataCacheOpener:
        """The store's discovery cache, for ``TokenClient(metadata_cache=...)``."""
        from reconciler.store import MetadataCacheOpener

        return MetadataCacheOpener(self.settings)

    def close(self) -> None:
        """Close what this invocation opened."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def out(self, text: str = "") -> None:
        """Write a line to stdout."""
        self.stdout.write(text + "\n")

    def notice(self, text: str) -> None:
        """Write a note for humans to stderr."""
        self.stderr.write(text + "\n")

    def json(self, data: Any) -> None:
        """Write JSON to stdout (sorted keys, stable for scripts)."""
        import json  # here, not at the top: most invocations print text

        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@overload
def reads_only(handler: Handler, *, writes_when: None = None) -> Handler: ...
@overload
def reads_only(handler: None = None, *, writes_when: str) -> Callable[[Handler], Handler]: ...
def reads_only(
    handler: Handler | None = None, *, writes_when: str | None = None
) -> Handler | Callable[[Handler], Handler]:
    """Mark a command that only reads the store: it opens it without creating or migrating anything.

    ``writes_when`` names an option that makes it open the store as a writer would
    (``plan --out``: a saved plan binds secret digests to the store's key, so the key must exist).
    """

    def mark(target: Handler) -> Handler:
        target.reads_only = True  # type: ignore[attr-defined]
        target.writes_when = writes_when  # type: ignore[attr-defined]
        return target

    return mark(handler) if handler is not None else mark


def write_atomic(path: str | Path, text: str, *, new_mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` (temporary file, fsync, rename); an existing file keeps its mode."""
    import tempfile

    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_mode
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent) or ".")
    except OSError as exc:
        raise LinkctlError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise LinkctlError(f"cannot write {target}: {exc.strerror}") from None
        raise


def render_error(error: LinkctlError, stream: TextIO) -> None:
    """Print an error (and its hint) the one way users see errors."""
    if isinstance(error, InvalidConfiguration):
        from reconciler.diagnostics import render_text

        stream.write(render_text(error.diagnostics))
        stream.write(f"error: {error.message}\n")
        return
    text = str(error)
    if not text.startswith(("error:", "warning:")) and ": error:" not in text:
        text = f"error: {text}"
    stream.write(text + "\n")
    if error.hint:
        stream.write(f"  hint: {error.hint}\n")


def render_json_error(error: LinkctlError, stream: TextIO) -> None:
    """A failure of a command run with ``-o json`` as one JSON object on ``stream`` (see :func:`_report`)."""
    import json

    stream.write(json.dumps(error.as_json(), indent=2, sort_keys=True, default=str) + "\n")


def _store_failure(error: Exception, ctx: Context) -> LinkctlError | None:
    """A SQLite failure (corrupted or truncated file, full disk, read-only directory) as a store error."""
    sqlite3 = sys.modules.get("sqlite3")  # loaded only if the store was opened
    if sqlite3 is None or not isinstance(error, sqlite3.DatabaseError):
        return None
    from reconciler.store.sqlite import store_failure

    try:
        url = ctx.settings.state_url
    except LinkctlError:
        url = "(the configured store)"
    return store_failure(error, url)


def _report(error: LinkctlError, args: argparse.Namespace, ctx: Context) -> None:
    """Render a failure once: with ``-o json`` as a JSON object, else as text on stderr.

    ``token`` (``json_errors``) puts its JSON failure on stdout, where the token's JSON would
    be (its documented contract); every other command keeps stdout for data and writes the
    JSON failure to stderr.
    """
    if getattr(args, "output", None) != "json":
        render_error(error, ctx.stderr)
    elif getattr(args, "json_errors", False):
        render_json_error(error, ctx.stdout)
    else:
        render_json_error(error, ctx.stderr)


def run_handler(handler: Handler, args: argparse.Namespace, ctx: Context) -> int:
    """Run a command handler and turn its outcome into an exit code."""
    try:
        return handler(args, ctx)
    except LinkctlError as error:
        _report(error, args, ctx)
        return error.exit_code
    except KeyboardInterrupt:
        ctx.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as error:
        failure = _store_failure(error, ctx)
        if failure is not None:
            _report(failure, args, ctx)
            return failure.exit_code
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc(file=ctx.stderr)
        # Without --debug only the type: a library's message may quote input, and input may
        # hold a secret.
        detail = f": {error}" if getattr(args, "debug", False) else ""
        if getattr(args, "output", None) == "json":
            internal = {
                "error": "internal_error",
                "message": f"internal error: {type(error).__name__}{detail}",
                "hint": "this is a bug in linkctl; rerun with --debug and report the traceback",
                "exit_code": EXIT_ERROR,
            }
            import json

            ctx.stderr.write(json.dumps(internal, indent=2, sort_keys=True) + "\n")
            return EXIT_ERROR
        ctx.stderr.write(
            f"internal error: {type(error).__name__}{detail}\n"
            "  hint: this is a bug in linkctl; rerun with --debug and report the traceback\n"
        )
        return EXIT_ERROR
    finally:
        ctx.close()
        sys.stdout.flush()
