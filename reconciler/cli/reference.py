"""The command reference, docs/cli.md, generated from the parser (a test fails when it is stale).

Regenerate with ``python -m reconciler.cli.reference > docs/cli.md``. Each command's
section is its exact ``--help`` text at a fixed width, so the reference says what the
program says, no more and no less.
"""

from __future__ import annotations

import os
import sys

WIDTH = "100"  # argparse wraps at $COLUMNS; fixed so the file does not depend on the terminal

HEADER = """\
# Command reference

Generated from linkctl's argument parser by `python -m reconciler.cli.reference > docs/cli.md`;
`tests/e2e/test_completion_and_help.py` fails when this file is stale. Global options
(`--state URL`, `--debug`) are accepted before or after the command.
"""


def render() -> str:
    """docs/cli.md: the top-level help, then one section per command and subcommand."""
    from reconciler.cli import build_parser
    from reconciler.cli.parser_finish import leaf_parsers

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        parts = [HEADER, "## `linkctl`\n", "```text", parser.format_help().rstrip(), "```\n"]
        contents = ["## Commands\n"]
        for words, sub, _nested in leaf_parsers(parser):
            title = "linkctl " + " ".join(words)
            anchor = title.replace(" ", "-")
            contents.append(f"{'  ' * (len(words) - 1)}- [`{title}`](#{anchor})")
            parts += [
                f"{'#' * min(len(words) + 1, 4)} `{title}`\n",
                "```text",
                sub.format_help().rstrip(),
                "```\n",
            ]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join([parts[0], *contents, "", *parts[1:]])


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
