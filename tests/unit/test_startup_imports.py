"""Short commands import only what they need: `token` and `--version` start near Python's floor.

Checked in a real child process (``sys.modules`` at exit), not timed: which modules load
decides start-up, and a stray top-level import is what makes it slow again.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.settings import Settings
from tests.conftest import ROOT
from tests.support.stores import store_with_fresh_token

# Never needed to print a stored token or the version.
HEAVY = (
    "yaml",
    "pydantic",
    "jsonschema",
    "httpx",
    "reconciler.sops",
    "reconciler.models",
    "reconciler.load",
    "reconciler.validate",
    "reconciler.plan",
    "reconciler.keeper.daemon",
    "reconciler.keeper.revoke",
    "reconciler.keeper.lease",
    "reconciler.oauth.client",
    "reconciler.cli.core_cmds",
    "reconciler.cli.completion",
    "reconciler.server",
    "reconciler.store.postgres",
    "starlette",
    "granian",
    "psycopg",
    "psycopg_pool",
    "prometheus_client",
    "argcomplete",
)
REPORT = (
    "import atexit, builtins, sys\n"
    "compiles = []\n"
    "def counting_compile(*args, _compile=builtins.compile, **kwargs):\n"
    "    # compile() of the import system (a module without byte code) is not the command's own\n"
    "    if not sys._getframe(1).f_code.co_filename.startswith('<frozen importlib'):\n"
    "        compiles.append(1)\n"
    "    return _compile(*args, **kwargs)\n"
    "builtins.compile = counting_compile\n"
    "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sys.modules) + '\\n'))\n"
    "atexit.register(lambda: sys.stderr.write(f'COMPILES {len(compiles)}\\n'))\n"
)


def run_child(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[str, set[str], int]:
    """Run ``linkctl ARGS`` in a child: its stdout, the modules imported at exit, its compile() calls."""
    (tmp_path / "sitecustomize.py").write_text(REPORT)
    child_env = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args], env=child_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    modules = next(x for x in lines if x.startswith("MODULES ")).split()[1:]
    compiles = int(next(x for x in lines if x.startswith("COMPILES ")).split()[1])
    return done.stdout, set(modules), compiles


def loaded_modules(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[str, set[str]]:
    """Run ``linkctl ARGS`` in a child; its stdout and the modules it had imported at exit."""
    out, modules, _compiles = run_child(args, env, tmp_path)
    return out, modules


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_version_imports_no_command_module(tmp_path: Path) -> None:
    out, modules = loaded_modules(["--version"], {"HOME": str(tmp_path)}, tmp_path)
    assert out.startswith("linkctl ")
    assert heavy(modules) == []
    cli_modules = {m for m in modules if m.startswith("reconciler.cli.")}
    assert cli_modules == {"reconciler.cli.parser"}, "--version prints before any other set-up"


def test_token_with_a_fresh_token_imports_neither_yaml_pydantic_nor_http(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "LINKCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}",
        "LINKCTL_STATE_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    store_with_fresh_token(Settings.from_env(env), "fresh", access_token="fresh-access-token")
    out, modules, compiles = run_child(["token", "fresh"], env, tmp_path)
    assert out.strip() == "fresh-access-token"
    # No compile() either: its first call sets up the AST types (0.75 ms), as a named tuple's
    # string annotations would (typing.ForwardRef compiles them).
    assert compiles == 0
    assert heavy(modules) == []
    assert "reconciler.cli.inspect_cmds" not in modules and "reconciler.cli.secrets_cmds" not in modules
    # A fresh token is read without building the store class (every interface of the store).
    assert "reconciler.store.sqlite" not in modules and "reconciler.store.base" not in modules
    # argparse's default help formatter imports shutil (lzma, bz2, fnmatch: 5 ms) to size itself.
    assert "shutil" not in modules
    # The records a token read builds (settings, the CLI context, the access token, the schema's
    # migrations) are no dataclasses: dataclasses imports inspect (6 ms), and each dataclass
    # definition is about half a millisecond more.
    assert not {"dataclasses", "inspect", "reconciler.domain.grants"} & modules
    # AES-GCM comes from cryptography's bindings, not through the ciphers package's every cipher.
    assert "cryptography.hazmat.primitives.ciphers" not in modules
    # `token NAME` alone is read without argparse (its import, gettext, locale and the parser's
    # set-up: 4 ms).
    assert not {"argparse", "gettext", "locale", "reconciler.cli.parser"} & modules


def test_token_with_an_option_still_parses_with_argparse(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "LINKCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}",
        "LINKCTL_STATE_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    store_with_fresh_token(Settings.from_env(env), "fresh", access_token="fresh-access-token")
    out, modules = loaded_modules(["token", "fresh", "-o", "json"], env, tmp_path)
    assert json.loads(out)["access_token"] == "fresh-access-token"
    assert "argparse" in modules and heavy(modules) == []


def test_a_warm_no_op_plan_imports_neither_yaml_pydantic_nor_the_revocation_rules(tmp_path: Path) -> None:
    # Served from the parse and validation caches: no file is parsed, no model is built, and
    # with nothing deleted no revocation rule is needed.
    repo = tmp_path / "links"
    repo.mkdir()
    (repo / "instance.yaml").write_text(
        "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\n"
        "spec: {baseUrl: https://wiki.example.com}\n"
    )
    for name in ("a", "b"):
        (repo / f"{name}.yaml").write_text(
            "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\n"
            f"metadata: {{name: {name}}}\nspec:\n  provider: google\n  clientId: id-{name}\n"
            "  clientSecret: {fromEnv: LINK_SECRET}\n  scopes: [openid]\n"
        )
    env = {
        "HOME": str(tmp_path),
        "LINK_SECRET": "s3cret-value",
        "LINKCTL_STATE": f"sqlite:///{tmp_path / 'state.db'}",
        "LINKCTL_STATE_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    loaded_modules(["apply", str(repo)], env, tmp_path)
    loaded_modules(["plan", str(repo)], env, tmp_path)  # fills the caches of this linkctl
    out, modules = loaded_modules(["plan", str(repo), "--prune"], env, tmp_path)
    assert "No changes" in out
    assert not {"yaml", "pydantic", "jsonschema", "reconciler.models", "reconciler.keeper.revoke"} & modules


def test_a_warm_validate_of_a_sops_file_imports_neither_yaml_nor_the_age_code(tmp_path: Path) -> None:
    # The file opened on the first run: with the same bytes and key the decryption memo
    # vouches for it, so neither the SOPS reader (YAML) nor age and AES-GCM are imported.
    import shutil

    repo = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", repo, ignore=shutil.ignore_patterns("kubernetes", "systemd", "ci"))
    env = {
        "HOME": str(tmp_path),
        "TRACKER_CLIENT_SECRET": "tracker-secret",
        "SOPS_AGE_KEY_FILE": str(repo / "keys" / "demo-age-key.txt"),
    }
    first, opened_modules = loaded_modules(["validate", str(repo)], env, tmp_path)
    assert first.startswith("OK: ") and "reconciler.sops.age" in opened_modules
    out, modules = loaded_modules(["validate", str(repo)], env, tmp_path)
    assert out == first
    shown = {"yaml", "pydantic", "cryptography", "reconciler.sops.tree", "reconciler.sops.age"}
    assert not shown & modules, sorted(shown & modules)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["token", "wiki"], "token"),
        (["--state", "sqlite:///x.db", "token", "wiki"], "token"),
        (["--sta", "sqlite:///x.db", "token", "wiki"], "token"),  # argparse takes abbreviations
        (["--state=sqlite:///x.db", "token", "wiki"], "token"),
        (["--log-format", "json", "token", "wiki"], "token"),
        (["--log-format", "token", "plan", "links"], "plan"),  # "token" is the option's value here
        (["--debug", "token", "wiki", "--state", "sqlite:///x.db"], "token"),
        (["plan", "token"], "plan"),
        (["validate", "links/", "--help"], "validate"),  # the command's own help
        (["--help", "token"], None),
        (["-h"], None),
        (["tokn", "wiki"], None),  # not a command: argparse lists every command in its error
        ([], None),
    ],
)
def test_the_command_word_picks_the_one_module_to_register(argv: list[str], command: str | None) -> None:
    # A value of a global option must never be taken for the command word.
    from reconciler.cli import COMMAND_MODULE, COMMAND_MODULES, modules_for

    assert modules_for(argv) == ((COMMAND_MODULE[command],) if command else COMMAND_MODULES)


def test_version_registers_no_command() -> None:
    from reconciler.cli import modules_for

    assert modules_for(["--version"]) == ()


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def test_each_command_is_registered_by_the_module_the_table_names() -> None:
    from reconciler.cli import COMMAND_MODULE, COMMAND_MODULES, build_parser

    full = _commands(build_parser())
    assert set(full) == set(COMMAND_MODULE)
    for module in COMMAND_MODULES:
        alone = _commands(build_parser((module,)))
        assert set(alone) == {word for word, owner in COMMAND_MODULE.items() if owner == module}
        for word, parser in alone.items():
            # Registered alone, a command parses and explains itself as in the full parser.
            assert parser.format_help() == full[word].format_help(), word


@pytest.mark.parametrize("name", ["wiki", "token", "ci-gmail.v2", "a=b", " -x", "Ünïcode"])
def test_a_plain_token_line_is_read_as_argparse_reads_it(name: str) -> None:
    # Every attribute and default, top-level and token's own: an option added to either parser
    # and not to plain_token_args fails here.
    from reconciler.cli import build_parser, modules_for, plain_token_args

    words = ["token", name]
    plain = plain_token_args(words)
    assert plain is not None
    assert vars(plain) == vars(build_parser(modules_for(words)).parse_args(words))
    assert vars(plain) == vars(build_parser().parse_args(words))


@pytest.mark.parametrize(
    "words",
    [
        ["token"],
        ["token", "-x"],
        ["token", "--"],
        ["token", ""],
        ["token", "wiki", "-o", "json"],
        ["token", "wiki", "extra"],
        ["--debug", "token", "wiki"],
        ["plan", "wiki"],
        ["tokens", "wiki"],
    ],
)
def test_any_other_line_goes_through_argparse(words: list[str]) -> None:
    from reconciler.cli import plain_token_args

    assert plain_token_args(words) is None
