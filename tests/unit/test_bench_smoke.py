"""The core benchmark stays runnable (tiny N; it measures, it asserts no speed)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _run_bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one benchmark script from the project root; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_bench_core_runs_at_small_n() -> None:
    done = _run_bench("bench_core.py", "--n", "20", "--no-terraform", timeout=120)
    steps = [line.split()[1] for line in done.stdout.splitlines() if line.strip().startswith("20 ")]
    assert steps == ["validate", "plan", "apply", "no-op", "no-op", "plan", "apply"]


def test_bench_ops_runs_at_small_n() -> None:
    done = _run_bench("bench_ops.py", "--n", "20", "--repeat", "1", timeout=120)
    steps = [
        line.split(None, 1)[1].rsplit(None, 2)[0]
        for line in done.stdout.splitlines()
        if line.startswith("     20 ")
    ]
    assert steps == ["link_states", "scrape cold", "scrape warm", "peer", "notify idle", "notify 1 %"]


def test_bench_startup_runs_with_two_runs_per_step() -> None:
    done = _run_bench("bench_startup.py", "--runs", "2", timeout=180)
    steps = {line[:30].strip() for line in done.stdout.splitlines() if "ms" not in line[:30]}
    wanted = {"python -c pass", "linkctl --version", "token NAME (fresh)", "no-op plan, 30"}
    assert wanted <= steps, done.stdout


def test_bench_keeper_runs_at_small_n() -> None:
    done = _run_bench("bench_keeper.py", "--links", "30", "--rounds", "2", timeout=180)
    out = done.stdout
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("round ")] == [
        "round 1",
        "round 2",
    ]
    for workers in (1, 2):  # the default worker counts, each verified and compared in every round
        assert f"store check, keeper w={workers}, every round: 30/30 grants healthy" in out
        assert f"ratio keeper w={workers} / baseline (same round): throughput median" in out
    assert out.count("all done, no lost grant, no double refresh") == 2


def test_bench_keeper_runs_the_daemon_loop_at_small_n() -> None:
    done = _run_bench(
        "bench_keeper.py", "--links", "30", "--rounds", "1", "--workers", "2", "--daemon", timeout=180
    )
    out = done.stdout
    assert "the keeper's daemon loop (linkctl keeper) with [2] worker(s)" in out
    assert "store check, keeper w=2, every round: 30/30 grants healthy" in out, out
    assert "all done, no lost grant, no double refresh" in out and " chunks," in out
