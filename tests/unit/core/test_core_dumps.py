"""A linkctl process is non-dumpable: a crash must not write decrypted secrets to ``core``."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """\
import resource
from reconciler.cli import disable_core_dumps
resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
disable_core_dumps()
print(resource.getrlimit(resource.RLIMIT_CORE))
with open('/proc/self/status') as status:
    print([line for line in status if line.startswith('CoreDumping')] or 'n/a')
import ctypes
print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_disable_core_dumps_zeroes_rlimit_and_clears_dumpable() -> None:
    """Even a parent's `ulimit -c unlimited` is overridden: RLIMIT_CORE (0, 0), PR_GET_DUMPABLE 0."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "(0, 0)" in out
    assert "dumpable 0" in out
