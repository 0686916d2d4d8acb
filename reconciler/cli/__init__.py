"""The ``linkctl`` command line: argument parsing, output and exit codes.

A thin edge over the core. Each command module registers its subcommands with
``register(subparsers)`` and sets ``handler(args, ctx) -> int`` as default;
heavy modules are imported inside handlers so ``linkctl --help`` stays fast.
Errors are rendered here, once (see :mod:`reconciler.cli.output`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from reconciler import __version__

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

EPILOG = """\
exit codes: 0 success / no changes, 1 unexpected error, 2 changes present
(with --detailed-exitcode), 3 invalid configuration, 4 conflict (lock timeout, stale plan),
64 usage error (unknown flag, missing argument, bad value); `token` adds 5-8 (see README)

environment: LINKCTL_STATE (state URL), LINKCTL_STATE_KEY / LINKCTL_STATE_KEY_FILE
(state encryption key), SOPS_AGE_KEY / SOPS_AGE_KEY_FILE / SOPS_AGE_KEY_CMD (age identities)
"""


class UsageExitParser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit 64, not argparse's 2 ("changes present")."""

    def error(self, message: str) -> NoReturn:
        """Print usage and the message to stderr, then exit with the usage code."""
        from reconciler.errors import EXIT_USAGE

        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        """A help formatter sized to the terminal, without importing :mod:`shutil`.

        argparse builds a formatter for every ``add_argument`` (to check the metavar), and
        the default one asks ``shutil.get_terminal_size``: importing shutil (lzma, bz2,
        fnmatch) is 5 ms of every start, a tenth of a ``token`` call.
        """
        # Every argparse formatter takes `width`; typeshed's protocol names only `prog`.
        formatter = self.formatter_class(prog=self.prog, width=terminal_columns() - 2)  # type: ignore[call-arg]
        if hasattr(self, "color"):  # Python 3.14 colours help; keep what its own method does
            formatter._set_color(self.color)  # type: ignore[attr-defined]
        return formatter


def terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it: $COLUMNS, stdout, or 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The argument parser with the subcommands of ``modules`` (default: every command)."""
    # Subparsers are built with the parent's class, so every command exits 64 on a typo.
    parser = UsageExitParser(
        prog="linkctl",
        description="Manage outgoing OAuth 2.0 links from files in git.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"linkctl {__version__}")
    parser.add_argument("--state", metavar="URL", help="state URL (default: $LINKCTL_STATE or sqlite)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            if len(modules) == 1:  # the command's own module is not installed: say so as a full parse does
                return build_parser()
            continue
        module.register(subparsers)
    if modules:  # `--version` builds no command: nothing to finish
        from reconciler.cli.parser_finish import finish

        finish(parser)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linkctl`` console script."""
    # Every command may decrypt secrets (SOPS files, the store), so harden before any of them.
    disable_core_dumps()
    words = sys.argv[1:] if argv is None else list(argv)
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (see cli.completion)
        from reconciler.cli.completion import complete

        complete(build_parser())
    parser = build_parser(modules_for(words))
    args = parser.parse_args(words)  # `--version` and `--help` exit here, before any output set-up
    from reconciler.cli.output import Context, run_handler

    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    ctx = Context(args=args, env=os.environ, stdout=sys.stdout, stderr=sys.stderr)
    return run_handler(args.handler, args, ctx)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
