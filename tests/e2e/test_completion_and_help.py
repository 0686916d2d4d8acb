"""Shell completion, examples in every --help, global options after the command, a current docs/cli.md."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import build_parser
from reconciler.cli.parser_finish import EXAMPLES, leaf_parsers
from reconciler.cli.reference import render
from tests.conftest import ROOT, require_tool
from tests.support.cli import INSTANCE, Linkctl, link_doc

BASH = """
source <(linkctl completion bash)
complete -p linkctl >/dev/null || exit 9
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_python_argcomplete linkctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


def _complete(linkctl: Linkctl, line: str) -> list[str]:
    bash = require_tool("bash")
    shim = linkctl.cwd / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "linkctl").write_text(f'#!/bin/sh\nexec {sys.executable} -m reconciler "$@"\n')
    (shim / "linkctl").chmod(0o755)
    env = {**linkctl.env, "PATH": f"{shim}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [bash, "-c", BASH, "bash", line], env=env, capture_output=True, text=True, timeout=60, cwd=linkctl.cwd
    )
    assert done.returncode == 0, done.stderr
    return sorted(word.strip() for word in done.stdout.splitlines() if word.strip())


def test_bash_completes_commands_choices_and_link_names_from_the_store(linkctl: Linkctl) -> None:
    assert _complete(linkctl, "linkctl sh") == ["show"]
    assert _complete(linkctl, "linkctl plan -o ") == ["json", "markdown", "text"]
    assert _complete(linkctl, "linkctl show ") == []  # no store yet: no names, no error
    assert not linkctl.state_db.exists(), "completion must never create a store"
    directory = linkctl.cwd / "links"
    directory.mkdir()
    (directory / "instance.yaml").write_text(INSTANCE)
    (directory / "links.yaml").write_text(
        "---\n".join([link_doc("alpha"), link_doc("beta"), link_doc("alps")])
    )
    linkctl("apply", "links")
    assert _complete(linkctl, "linkctl show al") == ["alpha", "alps"]
    assert _complete(linkctl, "linkctl token b") == ["beta"]


@pytest.mark.parametrize(
    ("shell", "marker"), [("zsh", "#compdef linkctl"), ("fish", "complete --command linkctl")]
)
def test_zsh_and_fish_scripts_are_generated_from_the_parser(
    linkctl: Linkctl, shell: str, marker: str
) -> None:
    script = linkctl("completion", shell).stdout
    assert marker in script and "_ARGCOMPLETE" in script
    bad = linkctl("completion", "powershell", expect=64)
    assert "invalid choice" in bad.stderr


def test_every_command_help_ends_with_examples_that_parse() -> None:
    parser = build_parser()
    for words, sub, nested in leaf_parsers(parser):
        command = " ".join(words)
        if nested:
            continue
        examples = EXAMPLES.get(command)
        assert examples and 2 <= len(examples) <= 3, f"`linkctl {command} --help` needs 2 or 3 examples"
        assert sub.format_help().rstrip().endswith(examples[-1]), command
        for example in examples:
            match = re.search(r"\blinkctl((?: [^|>)#`]*)?)", example)
            assert match, example
            words_of = shlex.split(match.group(1))
            parser.parse_args(words_of)  # an example that does not parse exits 64 here


def test_global_options_work_after_the_command_too(linkctl: Linkctl, tmp_path: Path) -> None:
    parser = build_parser()
    assert parser.parse_args(["list", "--state", "sqlite:///b.db"]).state == "sqlite:///b.db"
    assert parser.parse_args(["--state", "sqlite:///a.db", "list"]).state == "sqlite:///a.db"
    assert parser.parse_args(["state", "show", "--debug"]).debug is True
    assert parser.parse_args(["list"]).debug is False
    elsewhere = tmp_path / "elsewhere.db"
    after = linkctl("state", "show", "-o", "json", "--state", f"sqlite:///{elsewhere}").json()
    before = linkctl("--state", f"sqlite:///{elsewhere}", "state", "show", "-o", "json").json()
    assert after == before and str(elsewhere) in str(after)


def test_docs_cli_md_is_current() -> None:
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == render(), "docs/cli.md is stale: run `python -m reconciler.cli.reference > docs/cli.md`"
