"""Run the numerical tests again under every CPU kernel set below this machine's best.

    python tests/lower_kernels.py [pytest arguments]

The README's test command runs this after the whole suite: an AVX-512 machine also runs the
``numerics`` tests (parity across engines, precisions, int8, resume and shards, the metric
reproductions) with PyTorch's AVX2 and default kernels, an AVX2 machine with the default ones; a
CPU can only step down. Each set is forced through ``ATEN_CPU_CAPABILITY`` and
``ONEDNN_MAX_CPU_ISA`` (utils.cpu); ONNX Runtime has no such switch and runs its best kernels in
every pass. Exit status: the first failing pass's, else 0.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.cpu import best_kernel_set, features_text, kernel_set_environment, lower_kernel_sets  # noqa: E402


def main(argv: list[str]) -> int:
    sets = lower_kernel_sets()
    if not sets:
        print(f"lower kernel sets: none below {best_kernel_set()} on this CPU ({features_text()})")
        return 0
    status = 0
    for name in sets:
        env = {**os.environ, **kernel_set_environment(name)}
        print(f"--- numerics tests with {name} kernels ({features_text()} CPU; "
              f"{' '.join(f'{k}={v}' for k, v in kernel_set_environment(name).items())})", flush=True)
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "numerics", *(argv or ["-n", "2", "tests"])]
        rc = subprocess.call(cmd, cwd=REPO, env=env)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
