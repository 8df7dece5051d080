"""What this CPU can do, and which kernel sets the numerical libraries may be forced down to.

PyTorch picks its own vectorised kernels once per process from ``ATEN_CPU_CAPABILITY``
(``default`` < ``avx2`` < ``avx512``; higher than the CPU has is ignored), and its convolutions'
oneDNN backend from ``ONEDNN_MAX_CPU_ISA`` (``SSE41``, ``AVX2``, ``AVX512_CORE``, ...; a ceiling).
Both must be set before torch is imported. ONNX Runtime's MLAS kernels follow CPUID and have no
such switch: they always run the best set this CPU has.
"""
from __future__ import annotations

import functools
import platform

# the x86 features that change speed or numerics here, as /proc/cpuinfo names them
FEATURES = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),  # int8 dot products (the int8 export's speed-up)
    "BF16": ("avx512_bf16",),  # native bf16 dot products (bf16 training's speed-up)
    "AMX": ("amx_tile", "amx_bf16", "amx_int8"),
}

# a kernel set: PyTorch's capability name and the matching oneDNN ceiling
KERNEL_SETS = {"avx512": "AVX512_CORE", "avx2": "AVX2", "default": "SSE41"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_features(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """``{"AVX2": True, "AVX-512": False, "VNNI": ..., "BF16": ..., "AMX": ...}``."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in names) for name, names in FEATURES.items()}


def features_text(flags: frozenset[str] | None = None) -> str:
    """The features this CPU has, as docs name them: ``AVX-512 + VNNI + BF16`` or ``AVX2 only``."""
    have = [n for n, ok in cpu_features(flags).items() if ok]
    if have == ["AVX2"]:
        return "AVX2 only"
    shown = [n for n in have if n != "AVX2" or "AVX-512" not in have]  # AVX-512 implies AVX2
    return " + ".join(shown) if shown else "no AVX2"


def supports_bf16(flags: frozenset[str] | None = None) -> bool:
    """Native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    f = cpu_features(flags)
    return f["BF16"] or f["AMX"]


def best_kernel_set(flags: frozenset[str] | None = None) -> str:
    """The highest of :data:`KERNEL_SETS` this CPU runs."""
    f = cpu_features(flags)
    return "avx512" if f["AVX-512"] else "avx2" if f["AVX2"] else "default"


def lower_kernel_sets(flags: frozenset[str] | None = None) -> list[str]:
    """The kernel sets below this CPU's best, highest first (an AVX-512 CPU: avx2, default)."""
    order = list(KERNEL_SETS)
    return order[order.index(best_kernel_set(flags)) + 1:]


def kernel_set_environment(name: str) -> dict[str, str]:
    """The variables that force PyTorch (and its oneDNN) down to kernel set ``name``."""
    if name not in KERNEL_SETS:
        raise ValueError(f"unknown kernel set {name!r} (expected one of {', '.join(KERNEL_SETS)})")
    return {"ATEN_CPU_CAPABILITY": name, "ONEDNN_MAX_CPU_ISA": KERNEL_SETS[name]}


def torch_kernel_set() -> str:
    """The kernel set this process's PyTorch runs (lower-case, as ``ATEN_CPU_CAPABILITY`` spells it)."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()
