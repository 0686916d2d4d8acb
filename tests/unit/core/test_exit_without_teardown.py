"""The console script ends without the interpreter's teardown, yet exits as ``sys.exit`` would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reconciler.errors import EXIT_USAGE
from tests.support.cli import INSTANCE

PROBE = """\
import atexit, sys, threading, time
from reconciler.cli import exit_without_teardown
atexit.register(lambda: print("exit handler ran", flush=False))
print("x" * 1_000_000)  # more than any pipe buffer: all of it must still arrive
sys.stderr.write("to stderr\\n")
{before}
exit_without_teardown(3)
sys.stderr.write("returned\\n")
sys.exit(5)
"""


def _probe(before: str = "") -> subprocess.CompletedProcess[str]:
    code = PROBE.format(before=before)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_exit_code_output_and_exit_handlers_are_those_of_an_ordinary_exit() -> None:
    """Code 3, a megabyte of buffered stdout delivered whole, stderr, and the exit handler's line."""
    done = _probe()
    assert done.returncode == 3
    assert done.stdout == "x" * 1_000_000 + "\nexit handler ran\n"
    assert done.stderr == "to stderr\n"


def test_another_thread_alive_leaves_the_exit_to_the_interpreter() -> None:
    """The ordinary exit joins a running (non-daemon) thread: its work is not cut off."""
    thread = "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()"
    done = _probe(thread)
    assert done.returncode == 5
    assert "returned" in done.stderr
    assert done.stdout.endswith("exit handler ran\nthread done\n") or done.stdout.endswith(
        "thread done\nexit handler ran\n"
    )


def test_output_that_cannot_be_flushed_leaves_the_exit_to_the_interpreter() -> None:
    """A closed stdout is not an error to hide: the ordinary exit runs (and the handler once)."""
    done = _probe("sys.stdout.close()")
    assert done.returncode == 5
    assert "returned" in done.stderr


CONSOLE = """\
import os, sys
from reconciler.cli import console_main


class Teardown:
    def __del__(self) -> None:  # runs when the interpreter tears the module down
        os.write(2, b"torn down\\n")


kept = Teardown()
sys.argv = ["linkctl", *sys.argv[1:]]
console_main()
"""


def _console(
    tmp: Path, env: dict[str, str], *args: str, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    script = tmp / "console.py"
    script.write_text(CONSOLE)
    return subprocess.run(
        [sys.executable, *python, str(script), *args], capture_output=True, text=True, timeout=60, env=env
    )


def _repository(tmp: Path) -> Path:
    repo = tmp / "links"
    repo.mkdir()
    (repo / "instance.yaml").write_text(INSTANCE)
    return repo


def test_the_console_script_skips_the_teardown_and_keeps_output_and_exit_codes(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """A real command through ``console_main``: its output and code, and no teardown after it."""
    repo = _repository(tmp_path)
    valid = _console(tmp_path, isolated_env, "validate", str(repo))
    assert valid.returncode == 0, valid
    assert valid.stdout.startswith("OK: 0 link(s) in 1 file(s)")
    assert "torn down" not in valid.stderr
    usage = _console(tmp_path, isolated_env, "apply")
    assert usage.returncode == EXIT_USAGE, usage
    assert "give either PATHS or --plan FILE" in usage.stderr and "torn down" not in usage.stderr


def test_under_a_profiler_the_ordinary_exit_lets_it_write_its_results(
    tmp_path: Path, isolated_env: dict[str, str]
) -> None:
    """cProfile (and tracers, coverage, ``python -i``) report after the program: nothing is cut off."""
    repo = _repository(tmp_path)
    profiled = _console(tmp_path, isolated_env, "validate", str(repo), python=("-m", "cProfile"))
    assert profiled.returncode == 0, profiled
    assert "function calls" in profiled.stdout and "torn down" in profiled.stderr
