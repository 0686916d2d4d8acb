"""Shell completion: ``linkctl completion bash|zsh|fish`` and the completer the shells call back.

Generated from the parser by argcomplete, so it never drifts from the commands: the
shell runs ``linkctl`` with ``_ARGCOMPLETE`` set, and :func:`complete` answers from the
same parser the command uses. Link names come from the store, read-only and only when
it opens without writing; completion never prints an error and never creates a store.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.cli.output import Context

SHELLS = ("bash", "zsh", "fish")
# Commands whose positional NAME is a stored link.
LINK_NAME_COMMANDS = ("show", "token", "authorize", "doctor", "redirect-url")


def register(subparsers: Any) -> None:
    """Add ``linkctl completion SHELL``."""
    parser = subparsers.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description="Print a completion script generated from linkctl's parser (commands, flags,"
        " choices, and link names from the store).",
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    parser.set_defaults(handler=completion_command)


def completion_command(args: argparse.Namespace, ctx: Context) -> int:
    """Print the completion script for ``args.shell``."""
    from argcomplete import shell_integration

    ctx.stdout.write(shell_integration.shellcode(["linkctl"], shell=args.shell))
    return 0


def link_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Stored link names starting with ``prefix`` (none when the store cannot be read as it is)."""
    from reconciler.settings import Settings
    from reconciler.store import open_store

    try:
        settings = Settings.from_env(os.environ, state_url=getattr(parsed_args, "state", None))
        with open_store(settings, notice=lambda _text: None, create=False, read_only=True) as store:
            return [link.name for link in store.list_links() if link.name.startswith(prefix)]
    except Exception:  # completion must stay silent: a missing key or store means no names
        return []


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (``_ARGCOMPLETE`` is set) and exit."""
    import argcomplete

    from reconciler.cli.parser_finish import leaf_parsers

    for words, sub, _nested in leaf_parsers(parser):
        if words[-1] in LINK_NAME_COMMANDS and len(words) == 1:
            for action in sub._actions:
                if not action.option_strings and action.dest == "name":
                    action.completer = link_names  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser, always_complete_options=False)
