"""The ``linkctl`` command line: argument parsing, output and exit codes.

A thin edge over the core. Each command module registers its subcommands with
``register(subparsers)`` and sets ``handler(args, ctx) -> int`` as default;
heavy modules are imported inside handlers so ``linkctl --help`` stays fast.
Errors are rendered here, once (see :mod:`reconciler.cli.output`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, cast

if TYPE_CHECKING:
    import argparse

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "reconciler.cli.init_cmds",
    "reconciler.cli.core_cmds",
    "reconciler.cli.inspect_cmds",
    "reconciler.cli.secrets_cmds",
    "reconciler.cli.oauth_cmds",
    "reconciler.cli.keeper_cmds",
    "reconciler.cli.completion",
    "reconciler.cli.server_cmds",
)

# The module registering each command. linkctl runs as a short process (`token` in every CI
# job, `validate` in pre-commit, `plan` in pull requests), and registering every command is
# 5 ms of argparse set-up: a parse registers only its command's module (the others are not
# imported). A test checks this table against what the modules register.
COMMAND_MODULE = {
    "init": "reconciler.cli.init_cmds",
    **dict.fromkeys(("validate", "plan", "apply", "reconcile"), "reconciler.cli.core_cmds"),
    **dict.fromkeys(("list", "show", "redirect-url", "state", "schema"), "reconciler.cli.inspect_cmds"),
    **dict.fromkeys(("secrets", "keygen"), "reconciler.cli.secrets_cmds"),
    **dict.fromkeys(("authorize", "doctor"), "reconciler.cli.oauth_cmds"),
    **dict.fromkeys(("token", "keeper"), "reconciler.cli.keeper_cmds"),
    "completion": "reconciler.cli.completion",
    **dict.fromkeys(("serve", "apikey"), "reconciler.cli.server_cmds"),
}
# Top-level options that take a value (to find the command word without parsing).
_VALUE_OPTIONS = ("--state", "--log-format")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with the subcommands of ``modules`` (default: every command)."""
    from reconciler.cli.parser import command_parser

    return command_parser(modules, every_module=COMMAND_MODULES)


def modules_for(argv: Sequence[str]) -> Sequence[str]:
    """The command modules a parse of ``argv`` needs: the command's own, none for ``--version``, else all."""
    words = iter(argv)
    for word in words:
        if word == "--":
            break
        if len(word) > 2 and any(option.startswith(word) for option in _VALUE_OPTIONS):
            next(words, None)  # argparse takes abbreviations too: `--sta URL`
        elif not word.startswith("-"):
            return (COMMAND_MODULE[word],) if word in COMMAND_MODULE else COMMAND_MODULES
        elif word in ("-h", "--help"):
            return COMMAND_MODULES
    # No command: `--version` prints and exits before any is needed; anything else prints help.
    return () if "--version" in argv and not {"-h", "--help"} & set(argv) else COMMAND_MODULES


def disable_core_dumps() -> None:
    """Make this process non-dumpable (best effort): a crash must not write secrets to ``core``."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError):
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_dumpable = 4
            libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def plain_token_args(words: Sequence[str]) -> argparse.Namespace | None:
    """The arguments of ``token NAME`` with no option, as argparse parses them; None: any other line.

    The form of every CI job's ``TOKEN=$(linkctl token NAME)``, built without argparse, whose
    import and parser set-up are 4 ms of a 40 ms command. Anything else (an option, a name
    that starts with ``-``) goes through the parser. A test compares this with argparse's own
    parse, so an option added to ``token`` or to linkctl is not missed here.
    """
    if len(words) != 2 or words[0] != "token" or words[1][:1] in ("", "-"):
        return None
    import types

    from reconciler.cli.keeper_cmds import DEFAULT_MIN_VALID, DEFAULT_WAIT, token_command

    top_level = {"command": "token", "state": None, "debug": False, "log_format": None}
    token = {"name": words[1], "min_valid": DEFAULT_MIN_VALID, "output": "text", "wait": DEFAULT_WAIT}
    # argparse.Namespace is an attribute bag like this one; handlers only read attributes.
    parsed = types.SimpleNamespace(**top_level, **token, handler=token_command, json_errors=True)
    return cast("argparse.Namespace", parsed)


def console_main() -> NoReturn:
    """The ``linkctl`` console script (and ``python -m reconciler``): run, then end this process."""
    code = main()
    exit_without_teardown(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``linkctl`` command (``argv``: default ``sys.argv[1:]``) and return its exit code."""
    return _run(argv)


def exit_without_teardown(code: int) -> None:
    """End the process now with ``code``, as ``sys.exit`` would, but without the interpreter's teardown.

    Tearing down frees every object one by one and runs a last full garbage collection:
    6 ms after ``token``, about 40 ms after a plan of 10,000 links, for nothing anyone
    sees. Exit handlers still run (store pools, logging) and output is flushed first.
    This returns, and the ordinary exit takes over, when another thread is alive (a daemon
    thread too, though only the others are joined), when output cannot be flushed (it
    reports the broken pipe), and under a tracer, profiler, coverage or ``python -i``,
    which write their results after the program has run.
    """
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    if sys.gettrace() or sys.getprofile() or sys.flags.inspect or "coverage" in sys.modules:
        return
    import atexit

    if not _flushed():
        return
    atexit._run_exitfuncs()  # each handler runs once: the ordinary exit would find none left
    if _flushed():  # what the handlers wrote
        os._exit(code)


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # a closed pipe or stream
        return False
    return True


def _run(argv: Sequence[str] | None) -> int:
    # Every command may decrypt secrets (SOPS files, the store), so harden before any of them.
    disable_core_dumps()
    words = sys.argv[1:] if argv is None else list(argv)
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (see cli.completion)
        from reconciler.cli.completion import complete

        complete(build_parser())
    args = plain_token_args(words)
    if args is None:
        parser = build_parser(modules_for(words))
        args = parser.parse_args(words)  # `--version` and `--help` exit here, before any output set-up
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0
    from reconciler.cli.output import Context, run_handler

    ctx = Context(args=args, env=os.environ, stdout=sys.stdout, stderr=sys.stderr)
    return run_handler(args.handler, args, ctx)


if __name__ == "__main__":  # pragma: no cover
    console_main()
