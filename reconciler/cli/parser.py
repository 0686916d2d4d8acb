"""The ``linkctl`` argument parser: usage errors exit 64, help sized without :mod:`shutil`.

Imported only when a command line needs parsing: ``linkctl token NAME`` alone is read
without argparse (see :func:`reconciler.cli.plain_token_args`), whose import and set-up are
4 ms of that command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from reconciler import __version__

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


def command_parser(modules: Sequence[str], *, every_module: Sequence[str]) -> argparse.ArgumentParser:
    """The argument parser with the subcommands of ``modules`` (``every_module`` if a lone one is missing)."""
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
                return command_parser(every_module, every_module=every_module)
            continue
        module.register(subparsers)
    if modules:  # `--version` builds no command: nothing to finish
        from reconciler.cli.parser_finish import finish

        finish(parser)
    return parser
