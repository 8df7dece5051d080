"""What the benchmarks print about the machine they ran on: the CPU model, the features that change
speed here (AVX2, AVX-512, VNNI for int8, BF16 / AMX for bf16) and the kernel set PyTorch runs.

    python benchmarks/machine_info.py          # one line, then the details
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import cpu  # noqa: E402


def cpu_name() -> str:
    """``AMD EPYC (AVX2 only; torch kernels avx2)``: the model, its features, PyTorch's kernel set."""
    return f"{cpu.cpu_name()} ({cpu.features_text()}; torch kernels {cpu.torch_kernel_set()})"


def machine_report() -> dict:
    import torch

    return {"cpu": cpu.cpu_name(), "logical_cores": os.cpu_count(), "features": cpu.cpu_features(),
            "torch_kernel_set": cpu.torch_kernel_set(), "best_kernel_set": cpu.best_kernel_set(),
            "training_precision_auto": "bf16" if cpu.supports_bf16() else "fp32",
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(not set: the best)")}


if __name__ == "__main__":
    print(cpu_name())
    for k, v in machine_report().items():
        print(f"- {k}: {v}")
