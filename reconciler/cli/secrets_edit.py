"""``linkctl secrets edit FILE``: decrypt to a private temporary file, run ``$EDITOR``, encrypt again.

The plaintext lives only in a fresh 0700 directory (in ``/dev/shm`` where it exists, so it
is never written to disk) and is removed with everything the editor left beside it
(swap and backup files) whatever happens: the editor fails, is killed, linkctl gets
SIGTERM/SIGINT/SIGHUP, or the edited text does not parse. The file is replaced atomically
only after the new text encrypted; it keeps its recipients and rule (see
:func:`reconciler.sops.reencrypt_text`). A SIGKILL of linkctl itself cannot be cleaned up
after; /dev/shm at least keeps that plaintext off the disk and gone at reboot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.output import write_atomic
from reconciler.errors import EXIT_OK, ConfigError, CryptoError, LinkctlError

if TYPE_CHECKING:
    import argparse

    from reconciler.cli.output import Context

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stopped(Exception):
    """linkctl received a stop signal while the editor ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _editor(env: Mapping[str, str]) -> list[str]:
    command = env.get("VISUAL") or env.get("EDITOR") or "vi"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(
            f"$EDITOR cannot be parsed: {exc}", hint="set EDITOR to a command, e.g. nano"
        ) from None
    if not argv or shutil.which(argv[0], path=env.get("PATH")) is None:
        raise ConfigError(
            f"editor {argv[0] if argv else command!r} not found",
            hint="set EDITOR (or VISUAL) to an installed editor, e.g. EDITOR=nano",
        )
    return argv


@contextmanager
def _private_dir() -> Iterator[Path]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="linkctl-edit-", dir=base))  # 0700
    try:
        yield directory
    finally:
        for leftover in directory.rglob("*"):  # overwrite before unlinking: best effort on tmpfs too
            if leftover.is_file() and not leftover.is_symlink():
                try:
                    with open(leftover, "r+b") as handle:
                        handle.write(b"\0" * leftover.stat().st_size)
                except OSError:
                    pass
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _stop_signals_raise() -> Iterator[None]:
    def on_signal(signum: int, frame: object) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_editor(argv: list[str], path: Path, env: Mapping[str, str]) -> None:
    editor = subprocess.Popen([*argv, str(path)], env=dict(env))
    try:
        code = editor.wait()
    except _Stopped:
        editor.terminate()
        try:
            editor.wait(timeout=5)
        except subprocess.TimeoutExpired:
            editor.kill()
            editor.wait()
        raise
    if code < 0:
        raise CryptoError(
            f"the editor was killed ({signal.Signals(-code).name}); the file is unchanged",
            hint="nothing was written; run `linkctl secrets edit` again",
        )
    if code != 0:
        raise CryptoError(
            f"the editor exited with status {code}; the file is unchanged",
            hint="nothing was written (the decrypted copy is removed); run `linkctl secrets edit` again",
        )


def edit_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl secrets edit FILE``: edit a SOPS file's plaintext and encrypt it again."""
    from reconciler import sops

    target = os.path.realpath(args.file)  # write through a symlink, as sops does
    try:
        original = Path(target).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{args.file}: no such file", hint="`secrets encrypt` creates an encrypted file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{args.file}: cannot read: {type(exc).__name__}") from None
    fmt = sops.detect_format(args.file, original)
    docs = sops.decrypt_text(original, filename=args.file, fmt=fmt, env=ctx.env, comments=True)
    plaintext = sops.dump_documents(docs, fmt=fmt)
    argv = _editor(ctx.env)
    with _private_dir() as directory, _stop_signals_raise():
        scratch = directory / Path(args.file).name  # the same name: the editor picks its syntax mode
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(plaintext)
        while True:
            try:
                _run_editor(argv, scratch, ctx.env)
            except _Stopped as stopped:
                ctx.notice(f"linkctl secrets edit: {stopped}: stopped; {args.file} is unchanged")
                return 128 + stopped.signum
            edited = scratch.read_text(encoding="utf-8")
            if edited == plaintext:
                ctx.notice(f"{args.file}: no changes; the file is left as it was")
                return EXIT_OK
            try:
                encrypted = sops.reencrypt_text(
                    edited, like=original, filename=args.file, fmt=fmt, env=ctx.env
                )
            except LinkctlError as error:
                if not (sys.stdin.isatty() and ctx.stderr.isatty()):
                    raise CryptoError(
                        f"{error.message}; {args.file} is unchanged",
                        hint="nothing was written; fix the text and run `linkctl secrets edit` again",
                    ) from None
                ctx.stderr.write(f"{error.message}\nPress Enter to edit again, or Ctrl-C to give up: ")
                ctx.stderr.flush()
                try:
                    sys.stdin.readline()
                except _Stopped as stopped:
                    ctx.notice(f"\n{args.file} is unchanged")
                    return 128 + stopped.signum
                continue
            write_atomic(target, encrypted)
            ctx.notice(f"{args.file}: saved, encrypted for the same recipients")
            return EXIT_OK
