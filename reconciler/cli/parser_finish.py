"""Finishing touches on the built parser: global options after the command, and examples in every --help.

Applied once by :func:`reconciler.cli.build_parser` after every command module registered,
so command modules stay unaware of both. ``kubectl get pods --context x`` and
``gh pr list --repo x`` taught users that global flags go anywhere; argparse only takes
them before the command, so each leaf parser gets a copy whose default is *suppressed*:
given after the command it wins, absent it leaves the value from before the command.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

# The top-level options a leaf command accepts too (flags, help).
GLOBAL_OPTIONS: tuple[tuple[str, dict[str, object]], ...] = (
    ("--state", {"metavar": "URL", "help": "state URL (also accepted before the command)"}),
    ("--debug", {"action": "store_true", "help": "show tracebacks of unexpected errors"}),
    (
        "--log-format",
        {
            "choices": ("text", "json"),
            "help": "event log lines of keeper, reconcile and serve on stderr ($LINKCTL_LOG_FORMAT)",
        },
    ),
)

# Two or three examples per command, shown at the end of its --help (and in docs/cli.md).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "init": (
        "linkctl init links --base-url https://wiki.example.com",
        "linkctl init --base-url https://wiki.example.com --recipient age1…   # a key you already have",
    ),
    "validate": (
        "linkctl validate links/",
        "linkctl validate -o json links/ | jq '.diagnostics[]'",
        "linkctl validate --no-decrypt links/   # no age key (pull requests from forks)",
    ),
    "plan": (
        "linkctl plan links/ --detailed-exitcode   # exit 2 when there are changes",
        "linkctl plan links/ -o markdown --out plan.json > plan.md",
        "linkctl plan links/ --prune",
    ),
    "apply": (
        "linkctl apply links/",
        "linkctl apply --plan plan.json",
        "linkctl apply links/ --prune --lock-timeout 120",
    ),
    "reconcile": (
        "linkctl reconcile /srv/links --prune   # from cron: silent when nothing changed",
        "linkctl reconcile -o json links/",
    ),
    "list": ("linkctl list", "linkctl list -o json | jq -r '.links[].name'"),
    "show": ("linkctl show support-gmail", "linkctl show -o json support-gmail"),
    "redirect-url": (
        "linkctl redirect-url support-gmail",
        "linkctl redirect-url support-gmail --from links/   # before the first apply",
    ),
    "state": ("linkctl state show", "linkctl state events --link support-gmail"),
    "state show": ("linkctl state show", "linkctl state show -o json"),
    "state unlock": ("linkctl state show   # names the lock's ID and holder", "linkctl state unlock LOCK_ID"),
    "state events": (
        "linkctl state events --limit 20",
        "linkctl state events --link support-gmail -o json",
    ),
    "state migrate": (
        "linkctl state migrate",
        "linkctl --state postgresql://linkctl@db.example/linkctl state migrate",
    ),
    "state export": (
        "linkctl state export state.jsonl",
        "linkctl state export --force backup.jsonl",
    ),
    "state import": (
        "linkctl --state postgresql://linkctl@db.example/linkctl state import state.jsonl",
        "linkctl state import --lock-timeout 120 state.jsonl",
    ),
    "serve": (
        "linkctl serve   # http://127.0.0.1:8080: the links page, the OAuth callback, the token API",
        "linkctl serve --listen 0.0.0.0:8080 --keeper --log-format json",
    ),
    "apikey create": (
        "linkctl apikey create --links 'ci-*' --name ci --expires 90   # the key is the last line",
        "linkctl apikey create --admin --links '*' --name ops   # logs in to the pages",
    ),
    "apikey list": ("linkctl apikey list", "linkctl apikey list -o json"),
    "apikey revoke": ("linkctl apikey list   # shows the IDs", "linkctl apikey revoke KEY_ID"),
    "schema": ("linkctl schema", "linkctl schema --write schemas/"),
    "secrets": (
        "linkctl secrets encrypt --in-place links/google.yaml",
        "linkctl secrets edit links/google.yaml",
    ),
    "secrets encrypt": (
        "linkctl secrets encrypt --in-place links/google.yaml   # recipients from .sops.yaml",
        "linkctl secrets encrypt --age age1… links/google.yaml > links/google.enc.yaml",
    ),
    "secrets decrypt": (
        "linkctl secrets decrypt links/google.yaml",
        "SOPS_AGE_KEY_FILE=~/.config/sops/age/keys.txt linkctl secrets decrypt links/google.yaml",
    ),
    "secrets check": (
        "linkctl secrets check links/",
        "linkctl secrets check -o json links/google.yaml   # what the pre-commit hook runs, per file",
    ),
    "secrets edit": (
        "linkctl secrets edit links/google.yaml",
        "EDITOR=nano linkctl secrets edit links/google.yaml",
    ),
    "keygen": (
        "linkctl keygen -o ~/.config/sops/age/keys.txt",
        "linkctl keygen > /dev/null   # print the key only",
    ),
    "authorize": (
        "linkctl authorize support-gmail",
        "linkctl authorize support-gmail --no-browser   # print the URL; paste the final address back",
        "linkctl authorize tv-link --device   # a code to enter on another device",
    ),
    "doctor": ("linkctl doctor", "linkctl doctor support-gmail -o json"),
    "token": (
        "TOKEN=$(linkctl token support-gmail --min-valid 300)",
        "linkctl token support-gmail -o json | jq -r .expires_at",
    ),
    "completion": (
        "source <(linkctl completion bash)   # in ~/.bashrc",
        'linkctl completion zsh > "${fpath[1]}/_linkctl"',
        "linkctl completion fish > ~/.config/fish/completions/linkctl.fish",
    ),
    "keeper": (
        "linkctl keeper   # a daemon; SIGTERM drains and exits 0",
        "*/5 * * * * linkctl keeper --once   # cron: silent unless something happened",
    ),
}


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    """Every subcommand parser with its command words and whether it has subcommands of its own."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                yield (*path, name), sub, nested
                yield from leaf_parsers(sub, (*path, name))


def finish(parser: argparse.ArgumentParser) -> None:
    """Accept the global options after every command and end each command's help with examples."""
    top = {option for action in parser._actions for option in action.option_strings}
    for flag, options in GLOBAL_OPTIONS:
        if flag not in top:  # --log-format: defined here, so the fast path's parser stays as it is
            parser.add_argument(flag, default=None, **options)  # type: ignore[arg-type]
    for words, sub, _nested in leaf_parsers(parser):
        taken = {option for action in sub._actions for option in action.option_strings}
        for flag, options in GLOBAL_OPTIONS:
            if flag not in taken:
                sub.add_argument(flag, default=argparse.SUPPRESS, **options)  # type: ignore[arg-type]
        examples = EXAMPLES.get(" ".join(words))
        if examples and not sub.epilog:
            sub.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
            if sub.formatter_class is argparse.HelpFormatter:
                sub.formatter_class = argparse.RawDescriptionHelpFormatter
