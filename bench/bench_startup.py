#!/usr/bin/env python3
"""Benchmark start-up: short ``linkctl`` commands against Python's own floor, in one run.

linkctl runs as a short process many times a day (``token`` in CI jobs, ``validate``
in pre-commit, ``plan`` in pull requests), so its start-up is its speed. Each step is
a new process, measured as wall time and CPU time (user + system, from ``wait4``) and
peak RSS; the floor is ``python -c pass`` and a Python importing only what a token
read needs (sqlite3, json, AES-GCM), run the same way. Reported: median, fastest and
slowest of ``--runs`` runs, and the median's ratio to the floor.

Steps: ``--version``; ``token NAME`` with a fresh token in the store (no refresh); and
``validate`` of a 5-file repository with one SOPS file (the project's ``examples/``);
a no-op ``plan`` of 30 links and of 10,000 links (``--large``), each warm (caches
filled by an earlier run, as in pre-commit and cron) and cold (``LINKCTL_NO_CACHE=1``,
a fresh CI checkout).

``--tree DIR`` (repeatable) runs the steps of several source trees with this one
interpreter (``PYTHONPATH=DIR``), interleaved run by run so that a busy machine slows
every tree alike; without it the tree holding this script is measured::

    python bench/bench_startup.py [--runs 20] [--large] [--tree A --tree B]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_core import write_links  # noqa: E402  (the same link files as the core bench)

DEPLOYMENT_RECIPES = ("kubernetes", "systemd", "ci")
FLOOR_TOKEN_IMPORTS = "import json, sqlite3; from cryptography.hazmat.primitives.ciphers.aead import AESGCM"
# What the issue measured as "a Python that imports yaml, sqlite3 and AES-GCM".
FLOOR_ISSUE_IMPORTS = "import yaml, sqlite3; from cryptography.hazmat.primitives.ciphers.aead import AESGCM"

# Run in the tree under test: a link with a fresh token (valid for a day, no refresh).
SEED_TOKEN = """
import os, sys, time
from reconciler.domain.tokens import TokenResponse
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
store = open_store(Settings.from_env(os.environ), notice=lambda _: None)
now = time.time()
first = TokenResponse(access_token=Secret("bench-access-token"), refresh_token=Secret("bench-refresh"),
                      token_type="Bearer", expires_in=86400, scope=None, received_at=now)
store.save_authorization(sys.argv[1], first, clock_now=now)
store.close()
"""


@dataclasses.dataclass
class Samples:
    """Wall and CPU seconds of each run of one step, and the largest peak RSS (MiB)."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    rss: float = 0.0


def run(cmd: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one child process; raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode() if proc.stderr else ""  # before waiting: a full pipe blocks
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{stderr[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


class Tree:
    """One source tree under test, with its own home (caches), store and copies of the inputs."""

    def __init__(self, source: Path, work: Path, *, large: bool) -> None:
        self.source = source
        self.work = work
        (work / "home").mkdir(parents=True)
        examples = work / "examples"
        # The link repository of examples/ (5 files, one SOPS-encrypted), not the deployment
        # recipes beside it: their manifests are other tools' documents, parsed and skipped.
        shutil.copytree(
            HERE.parent / "examples", examples, ignore=shutil.ignore_patterns(*DEPLOYMENT_RECIPES)
        )
        self.examples = examples
        self.small = work / "links-30"
        write_links(self.small, 30)
        self.large = work / "links-10000" if large else None
        if self.large is not None:
            write_links(self.large, 10_000)
        # As installed software runs: byte-code compiled (PYTHONDONTWRITEBYTECODE would make
        # every start compile every module), none of the caller's linkctl/SOPS settings.
        subprocess.run([PYTHON[0], "-m", "compileall", "-q", str(source / "reconciler")], check=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LINKCTL_", "XDG_", "SOPS_")) and k != "PYTHONDONTWRITEBYTECODE"
        }
        self.env = env | {
            "PYTHONPATH": str(source),
            "HOME": str(work / "home"),
            "BENCH_SECRET": "bench-secret-value",
            "TRACKER_CLIENT_SECRET": "bench-tracker-secret",
            "SOPS_AGE_KEY_FILE": str(examples / "keys" / "demo-age-key.txt"),
            "LINKCTL_STATE_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        self.cold = {**self.env, "LINKCTL_NO_CACHE": "1"}

    def state(self, name: str) -> dict[str, str]:
        """The environment for the store named ``name`` (one per repository)."""
        return {**self.env, "LINKCTL_STATE": f"sqlite:///{self.work / (name + '.db')}"}

    def prepare(self) -> None:
        """Apply each repository to its store, seed a fresh token, and warm the caches."""
        linkctl = [PYTHON[0], "-c", CONSOLE_SCRIPT]
        repos = [("examples", self.examples), ("small", self.small)]
        if self.large is not None:
            repos.append(("large", self.large))
        for name, repo in repos:
            run([*linkctl, "apply", str(repo)], self.state(name), self.work)
            run([*linkctl, "plan", str(repo)], self.state(name), self.work)  # warms every cache
        run([PYTHON[0], "-c", SEED_TOKEN, "support-gmail"], self.state("examples"), self.work)
        run([*linkctl, "validate", str(self.examples)], self.env, self.work)

    def steps(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        """Each measured step: its command and environment."""
        linkctl = [PYTHON[0], "-c", CONSOLE_SCRIPT]
        small = self.state("small")
        steps = {
            "python -c pass": ([PYTHON[0], "-c", "pass"], self.env),
            "python: token-read imports": ([PYTHON[0], "-c", FLOOR_TOKEN_IMPORTS], self.env),
            "python: yaml+sqlite3+AES-GCM": ([PYTHON[0], "-c", FLOOR_ISSUE_IMPORTS], self.env),
            "linkctl --version": ([*linkctl, "--version"], self.env),
            "token NAME (fresh)": ([*linkctl, "token", "support-gmail"], self.state("examples")),
            "validate examples/": ([*linkctl, "validate", str(self.examples)], self.env),
            "validate examples/, cold": ([*linkctl, "validate", str(self.examples)], self.cold),
            "no-op plan, 30": ([*linkctl, "plan", str(self.small), "--detailed-exitcode"], small),
            "no-op plan, 30, cold": (
                [*linkctl, "plan", str(self.small), "--detailed-exitcode"],
                {**small, "LINKCTL_NO_CACHE": "1"},
            ),
        }
        if self.large is not None:
            large = self.state("large")
            plan = [*linkctl, "plan", str(self.large), "--detailed-exitcode"]
            steps["no-op plan, 10,000"] = (plan, large)
            steps["no-op plan, 10,000, cold"] = (plan, {**large, "LINKCTL_NO_CACHE": "1"})
        return steps


# What the ``linkctl`` console script that pip writes runs (``python -m`` would add runpy's
# imports, which an installed command does not pay); a tree older than ``console_main`` ran main.
CONSOLE_SCRIPT = (
    "import sys; from reconciler import cli; sys.exit((getattr(cli, 'console_main', None) or cli.main)())"
)
# The interpreter every step runs with (see :func:`installed_like_python`).
PYTHON = [sys.executable]


def installed_like_python(work: Path) -> str:
    """A Python that starts as an installed linkctl would: this one's packages, no editable finder.

    A development checkout installed with ``pip install -e .`` adds a ``.pth`` import hook
    that imports pathlib, urllib and re in every Python start (about 8 ms here), which a
    wheel or pipx install does not have. A fresh venv whose one ``.pth`` names this
    environment's site-packages sees the same packages without running their ``.pth`` files.
    """
    import sysconfig

    venv = work / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (target / "linkctl-bench-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(venv / "bin" / "python")


def main() -> int:
    """Measure every step of every tree, interleaved, and print medians, ranges and ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="runs per step (default 20)")
    parser.add_argument("--large-runs", type=int, default=5, help="runs of the 10,000-link plans (default 5)")
    parser.add_argument("--large", action="store_true", help="also the no-op plans of 10,000 links")
    parser.add_argument("--tree", action="append", type=Path, help="source tree to measure (repeatable)")
    args = parser.parse_args()
    sources = [p.resolve() for p in (args.tree or [HERE.parent])]
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; runs per step: {args.runs}"
        f" ({args.large_runs} for 10,000 links); median [fastest–slowest]"
    )
    with tempfile.TemporaryDirectory(prefix="linkctl-bench-startup-") as tmp:
        PYTHON[0] = installed_like_python(Path(tmp))
        trees = [Tree(src, Path(tmp) / f"tree{i}", large=args.large) for i, src in enumerate(sources)]
        for tree in trees:
            tree.prepare()
        results: dict[str, list[Samples]] = {}
        names = list(trees[0].steps())
        for step in names:
            results[step] = [Samples() for _ in trees]
            runs = args.large_runs if "10,000" in step else args.runs
            for _ in range(runs):  # interleaved: tree A, tree B, tree A, ...
                for tree, samples in zip(trees, results[step], strict=True):
                    cmd, env = tree.steps()[step]
                    wall, cpu, rss = run(cmd, env, tree.work)  # not in a tree: the import finds PYTHONPATH's
                    samples.wall.append(wall)
                    samples.cpu.append(cpu)
                    samples.rss = max(samples.rss, rss)
    for index, source in enumerate(sources):
        floor = statistics.median(results["python -c pass"][index].wall)
        floor_cpu = statistics.median(results["python -c pass"][index].cpu)
        print(f"\ntree: {source}")
        print(f"{'step':<30} {'wall ms':>8} {'range':>15} {'× floor':>8}", end="")
        print(f" {'CPU ms':>7} {'× floor':>8} {'MiB':>6}")
        for step in names:
            s = results[step][index]
            wall, cpu = statistics.median(s.wall), statistics.median(s.cpu)
            spread = f"[{1000 * min(s.wall):.0f}–{1000 * max(s.wall):.0f}]"
            print(
                f"{step:<30} {1000 * wall:>8.1f} {spread:>15} {wall / floor:>7.1f}x"
                f" {1000 * cpu:>7.1f} {cpu / floor_cpu:>7.1f}x {s.rss:>6.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
