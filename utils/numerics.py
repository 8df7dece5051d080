"""How far two computations of the same quantity may differ: the one place such bounds live.

A comparison across engines, kernels, precisions or processes (ONNX Runtime / TorchScript / the
fast network against eager PyTorch, torchrun shards against one process, ...) uses a
:class:`Bound`: ``|got - ref| <= atol + rtol * max|ref|`` element-wise, the scale taken from the
reference output as a whole, so a bound holds for logits of 100 as for unit descriptors. Each
bound carries one line saying where its numbers come from. Claims that are exact (a resumed run
on the same machine equals the uninterrupted one) are not bounds: they are checked with
``torch.equal``.

Used by the exporters (a file whose outputs leave the bound is refused) and by the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Bound:
    """``|got - ref| <= atol + rtol * max|ref|``; ``why``: where the numbers come from."""

    rtol: float
    atol: float
    why: str

    def limit(self, ref) -> float:
        """The largest difference allowed against ``ref`` (array or tensor)."""
        return self.atol + self.rtol * max_abs(ref)

    def check(self, got, ref) -> "Difference":
        """The worst difference between ``got`` and ``ref`` (same shape) and this bound's limit."""
        got, ref = _array(got), _array(ref)
        if got.shape != ref.shape:
            raise ValueError(f"shapes differ: {got.shape} against {ref.shape}")
        diff = float(np.abs(got - ref).max()) if got.size else 0.0
        return Difference(diff, self.limit(ref), max_abs(ref))


@dataclass(frozen=True)
class Difference:
    """One comparison's outcome: the largest |got - ref|, the bound's limit, and max|ref|."""

    diff: float
    limit: float
    scale: float

    @property
    def ok(self) -> bool:
        return self.diff <= self.limit

    def __str__(self) -> str:
        return f"{self.diff:.1e} (limit {self.limit:.1e} at max|ref| {self.scale:.3g})"


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def max_abs(x) -> float:
    """max|x| (0 for an empty array)."""
    a = _array(x)
    return float(np.abs(a).max()) if a.size else 0.0


# fp32 rounding (unit roundoff u = 6e-8) in a dot product of n terms summed in another order grows
# about like sqrt(n) u; SuperPoint's longest are 3 x 3 x 256 = 2304 terms (sqrt 48) and a chain of at
# most 12 layers adds them up: 12 x 48 x 6e-8 = 3.5e-5 of the output's scale. Measured between
# eager PyTorch, ONNX Runtime, TorchScript and the fast network, with batch norm folded or not, under
# PyTorch's AVX-512, AVX2 and default kernels: 1e-6 - 2e-6 of max|ref|.
FP32_REORDERED = Bound(rtol=3.5e-5, atol=1e-6,
                       why="fp32 sums in another order: 12 layers x sqrt(2304 terms) x 6e-8 of max|ref|")


def adam_steps(lr: float, steps: int) -> Bound:
    """Weights after ``steps`` Adam updates computed by two set-ups whose gradients differ only by
    rounding: Adam's update of one weight is at most about ``lr`` a step whatever its gradient, so a
    gradient whose sign rounding flips moves the two copies at most ``2 lr`` apart a step."""
    return Bound(rtol=0.0, atol=2.0 * lr * steps,
                 why=f"{steps} Adam steps of at most lr={lr:g} each, in opposite directions at worst")


# Losses of the same batch computed with the same weights in another order (one batch of 2B images
# against two shards of B, averaged): fp32 reductions, a few thousand terms deep.
LOSS_REORDERED = Bound(rtol=2e-5, atol=1e-7,
                       why="fp32 loss reductions in another order (sqrt(n) u for n up to 1e5 terms)")

# int8 against fp32 is not rounding noise: a working quantisation keeps the descriptors' direction.
INT8_MIN_DESC_COSINE = 0.98
