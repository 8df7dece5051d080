"""The comparison bounds (utils.numerics) and the CPU facts (utils.cpu), on hand-made cases."""
import numpy as np
import pytest
import torch

from utils import cpu
from utils.numerics import FP32_REORDERED, Bound, adam_steps, max_abs

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

AVX512_FLAGS = frozenset("fpu sse4_1 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16".split())
AVX2_FLAGS = frozenset("fpu sse4_1 avx avx2 fma".split())
OLD_FLAGS = frozenset("fpu sse4_1 sse4_2".split())


def test_bound_scales_with_the_reference():
    b = Bound(rtol=1e-3, atol=1e-6, why="test")
    ref = np.array([[100.0, -200.0], [0.5, 0.0]])
    assert b.limit(ref) == pytest.approx(1e-6 + 0.2)
    near = ref + np.array([[0.2, 0.0], [0.0, -0.2]])  # 0.2 off, on small and large entries alike
    assert b.check(near, ref).ok and b.check(near, ref).diff == pytest.approx(0.2)
    far = ref.copy()
    far[1, 1] = 0.21
    d = b.check(far, ref)
    assert not d.ok and d.scale == 200.0 and "limit 2.0e-01 at max|ref| 200" in str(d)
    # the same relative error on outputs 1000x smaller is the same verdict
    assert b.check(far / 1000, ref / 1000).ok is False and b.check(near / 1000, ref / 1000).ok
    with pytest.raises(ValueError, match="shapes differ"):
        b.check(ref[:1], ref)


def test_bound_takes_tensors_of_any_float_dtype():
    ref = torch.tensor([3.0, -4.0], dtype=torch.float32)
    got = ref.to(torch.bfloat16)  # exact for these values
    assert FP32_REORDERED.check(got, ref).diff == 0.0
    assert max_abs(torch.zeros(0)) == 0.0 and FP32_REORDERED.check(torch.zeros(0), torch.zeros(0)).ok


def test_fp32_bound_admits_reordered_sums_and_refuses_a_real_error():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 2304, generator=g)
    w = torch.randn(2304, generator=g)
    perm = torch.randperm(2304, generator=g)
    ref = a @ w
    reordered = a[:, perm] @ w[perm]  # the same 2304-term sums in another order
    assert not torch.equal(reordered, ref)  # the order does change the fp32 result ...
    assert FP32_REORDERED.check(reordered, ref).ok  # ... within the bound
    assert FP32_REORDERED.check(a @ w, a.double() @ w.double()).ok
    assert not FP32_REORDERED.check(ref * (1 + 1e-3), ref).ok  # a 0.1 % scale error is no rounding


def test_adam_bound_is_two_learning_rates_a_step():
    b = adam_steps(1e-3, 4)
    assert b.limit(torch.full((3,), 50.0)) == pytest.approx(8e-3)  # independent of the weights' size
    assert "4 Adam steps" in b.why


def test_cpu_features_from_flags():
    assert cpu.cpu_features(AVX512_FLAGS) == {"AVX2": True, "AVX-512": True, "VNNI": True, "BF16": True,
                                              "AMX": False}
    assert cpu.features_text(AVX512_FLAGS) == "AVX-512 + VNNI + BF16"
    assert cpu.features_text(AVX2_FLAGS) == "AVX2 only" and cpu.features_text(OLD_FLAGS) == "no AVX2"
    assert cpu.supports_bf16(AVX512_FLAGS) and not cpu.supports_bf16(AVX2_FLAGS)
    assert cpu.supports_bf16(AVX2_FLAGS | {"amx_bf16", "amx_tile"})


def test_lower_kernel_sets_only_step_down():
    assert cpu.best_kernel_set(AVX512_FLAGS) == "avx512"
    assert cpu.lower_kernel_sets(AVX512_FLAGS) == ["avx2", "default"]
    assert cpu.lower_kernel_sets(AVX2_FLAGS) == ["default"]
    assert cpu.lower_kernel_sets(OLD_FLAGS) == []
    assert cpu.kernel_set_environment("default") == {"ATEN_CPU_CAPABILITY": "default",
                                                     "ONEDNN_MAX_CPU_ISA": "SSE41"}
    with pytest.raises(ValueError, match="unknown kernel set 'avx1024'"):
        cpu.kernel_set_environment("avx1024")


def test_this_process_runs_the_kernel_set_it_was_asked_for():
    import os

    asked = os.environ.get("ATEN_CPU_CAPABILITY")
    got = cpu.torch_kernel_set()
    if asked:  # the lower-kernel run (tests/lower_kernels.py) really runs those kernels
        assert got == asked
    else:
        assert got == cpu.best_kernel_set()
