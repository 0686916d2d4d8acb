"""Benchmark: decrypt + MAC-verify a SOPS file with 1,000 encrypted values (target < 100 ms),
and time the real sops binary on the same file in the same run.

Run: ``python bench/bench_sops.py`` from the project root (venv active).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import sops
from reconciler.sops import age

VALUES = 1000
RUNS = 15


def main() -> int:
    """Build the file, time both decryptors, print the numbers and the ratio."""
    ident = age.generate_identity()
    lines = []
    for i in range(VALUES // 10):
        lines.append(f"group{i}:")
        lines += [f"    secret{j}: value-{i}-{j}-{'x' * 24}" for j in range(10)]
    text = "\n".join(lines) + "\n"
    enc = sops.encrypt_text(text, filename="bench.yaml", fmt="yaml", env={}, recipients=[ident.recipient])
    assert enc.count("ENC[AES256_GCM") == VALUES + 1
    env = {"SOPS_AGE_KEY": ident.encode()}
    ours = []
    for _ in range(RUNS):
        start = time.perf_counter()
        sops.decrypt_text(enc, filename="bench.yaml", fmt="yaml", env=env)
        ours.append(time.perf_counter() - start)
    ours_ms = statistics.median(ours) * 1000
    print(f"linkctl decrypt+MAC, {VALUES} values: median {ours_ms:.1f} ms (min {min(ours) * 1000:.1f} ms)")
    sops_bin = shutil.which("sops") or str(Path(sys.executable).parent / "sops")
    if not Path(sops_bin).exists():
        print("sops binary not found; ratio not computed")
        return 0 if ours_ms < 100 else 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.enc.yaml"
        path.write_text(enc)
        run_env = {**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1", "SOPS_AGE_KEY": ident.encode()}
        theirs = []
        for _ in range(RUNS):
            start = time.perf_counter()
            subprocess.run([sops_bin, "decrypt", str(path)], env=run_env, capture_output=True, check=True)
            theirs.append(time.perf_counter() - start)
    sops_ms = statistics.median(theirs) * 1000
    print(
        f"sops 3.11 binary decrypt (process incl. startup): median {sops_ms:.1f} ms "
        f"(min {min(theirs) * 1000:.1f} ms)"
    )
    print(f"ratio linkctl/sops: {ours_ms / sops_ms:.2f}")
    return 0 if ours_ms < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
