#!/usr/bin/env python3
"""Benchmark the core flow through the real CLI: validate, plan, apply, no-op plan, 1 % changed.

Every step runs ``linkctl`` as a separate process (process start included, as
cron and CI run it) and reports wall time and the child's peak RSS. Steps after the
first read unchanged files from the parse cache (as cron does); "cold" runs without it. When
``terraform`` is on PATH, N = 1,000 is also run as built-in ``terraform_data``
resources with the local backend (no provider download), and our/Terraform
ratios are printed from the same run.

    python bench/bench_core.py                 # N = 1,000 and 10,000 (+ Terraform at 1,000)
    python bench/bench_core.py --n 200 --no-terraform
    python bench/bench_core.py --repeat 5      # median of 5 runs for steps that change nothing
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
from pathlib import Path

INSTANCE = """apiVersion: linkctl.dev/v1
kind: Instance
metadata: {name: bench}
spec:
  baseUrl: https://wiki.example.com
"""

LINK = """---
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: link-{i:05d}
  labels: {{team: team-{team}}}
spec:
  provider: {provider}
  clientId: client-{i:05d}{suffix}
  clientSecret: {{fromEnv: BENCH_SECRET}}
  scopes: [{scope}]
"""


def write_links(root: Path, n: int, *, changed: set[int] | None = None, per_file: int = 500) -> None:
    """N links in files of ``per_file`` documents; ``changed`` get a different clientId."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "instance.yaml").write_text(INSTANCE)
    changed = changed or set()
    for start in range(0, n, per_file):
        parts = []
        for i in range(start, min(n, start + per_file)):
            provider, scope = ("google", "https://mail.google.com/") if i % 2 else ("microsoft", "User.Read")
            parts.append(
                LINK.format(
                    i=i, team=i % 7, provider=provider, scope=scope, suffix="-v2" if i in changed else ""
                )
            )
        (root / f"links-{start // per_file:04d}.yaml").write_text("".join(parts))


@dataclasses.dataclass(frozen=True)
class Measure:
    """Wall seconds (median of the runs, with the fastest and slowest) and the largest peak RSS."""

    wall: float
    rss: float
    low: float
    high: float
    runs: int


def measure(cmd: list[str], env: dict[str, str], times: int = 1, cwd: Path | None = None) -> Measure:
    """Run a step ``times`` times (only steps that change nothing may repeat)."""
    samples = [run(cmd, env, cwd) for _ in range(max(times, 1))]
    walls = [wall for wall, _ in samples]
    return Measure(
        statistics.median(walls), max(rss for _, rss in samples), min(walls), max(walls), len(walls)
    )


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process; raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode() if proc.stderr else ""  # before waiting: a full pipe blocks
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def bench_linkctl(n: int, work: Path, times: int) -> dict[str, Measure]:
    """The measured steps for N links; those that change nothing run ``times`` times."""
    # Nothing of the caller's linkctl/XDG/SOPS set-up: its cache or LINKCTL_NO_CACHE would
    # change what each step measures.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINKCTL_", "XDG_", "SOPS_"))}
    env |= {
        "BENCH_SECRET": "bench-secret-value",
        "HOME": str(work / "home"),
        "LINKCTL_STATE": f"sqlite:///{work / 'state.db'}",
        "LINKCTL_STATE_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    links = work / "links"
    linkctl = [sys.executable, "-m", "reconciler"]
    write_links(links, n)
    cold = {**env, "LINKCTL_NO_CACHE": "1"}
    # New files are parsed in every repeat (cold), as on their first run; apply then fills
    # the parse cache that the no-op plan reads, as cron's runs do.
    results = {
        "validate": measure([*linkctl, "validate", str(links)], cold, times),
        "plan (all new)": measure([*linkctl, "plan", str(links)], cold, times),
        "apply (all new)": measure([*linkctl, "apply", str(links)], env),
        "no-op plan": measure([*linkctl, "plan", str(links), "--detailed-exitcode"], env, times),
        # The same without the parse cache: what a fresh checkout (CI) pays.
        "no-op plan, cold": measure([*linkctl, "plan", str(links), "--detailed-exitcode"], cold, times),
    }
    write_links(links, n, changed=set(range(0, n, 100)))
    results["plan (1% changed)"] = measure([*linkctl, "plan", str(links)], cold, times)
    results["apply (1% changed)"] = measure([*linkctl, "apply", str(links)], env)
    return results


TF_RESOURCE = """
resource "terraform_data" "link_{i:05d}" {{
  input = {{
    provider  = "{provider}"
    client_id = "client-{i:05d}{suffix}"
    scopes    = ["{scope}"]
  }}
}}
"""


def bench_terraform(n: int, work: Path, times: int) -> dict[str, Measure] | None:
    """Terraform with N terraform_data resources: no-op plan and apply, local backend."""
    terraform = shutil.which("terraform")
    if terraform is None:
        return None
    tf = work / "tf"
    tf.mkdir()
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull}

    def write(changed: set[int]) -> None:
        body = []
        for i in range(n):
            provider, scope = ("google", "https://mail.google.com/") if i % 2 else ("microsoft", "User.Read")
            body.append(
                TF_RESOURCE.format(i=i, provider=provider, scope=scope, suffix="-v2" if i in changed else "")
            )
        (tf / "main.tf").write_text("".join(body))

    write(set())
    run([terraform, "init", "-input=false", "-no-color"], env, cwd=tf)
    plan = [terraform, "plan", "-input=false", "-no-color", "-lock=false"]
    results = {
        "plan (all new)": measure(plan, env, times, cwd=tf),
        "apply (all new)": measure(
            [terraform, "apply", "-auto-approve", "-input=false", "-no-color"], env, cwd=tf
        ),
        "no-op plan": measure([*plan, "-detailed-exitcode"], env, times, cwd=tf),
    }
    write(set(range(0, n, 100)))
    results["plan (1% changed)"] = measure(plan, env, times, cwd=tf)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help="link counts (default 1000 and 10000)")
    parser.add_argument("--no-terraform", action="store_true", help="skip the Terraform comparison")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="run each step that changes nothing K times (median)",
    )
    args = parser.parse_args()
    counts = args.n or [1000, 10000]
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"runs per step that changes nothing: {args.repeat} (median; range in brackets)")
    print(f"{'N':>6}  {'step':<20} {'linkctl s':>10} {'range':>13} {'peak MiB':>9}", end="")
    print(f" {'terraform s':>12} {'ratio':>8}")
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="linkctl-bench-") as tmp:
            work = Path(tmp)
            (work / "home").mkdir()
            ours = bench_linkctl(n, work, args.repeat)
            theirs = bench_terraform(n, work, args.repeat) if (n <= 1000 and not args.no_terraform) else None
        for step, mine in ours.items():
            tf = theirs.get(step) if theirs else None
            spread = f"[{mine.low:.2f}–{mine.high:.2f}]" if mine.runs > 1 else "-"
            tf_text = f"{tf.wall:>12.2f}" if tf else f"{'-':>12}"
            ratio = f"{tf.wall / mine.wall:>7.1f}x" if tf else f"{'-':>8}"
            print(f"{n:>6}  {step:<20} {mine.wall:>10.3f} {spread:>13} {mine.rss:>9.1f} {tf_text} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
