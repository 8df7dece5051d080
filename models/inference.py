"""SuperPoint arranged for fast inference: the same function, computed in a cheaper order.

``FastSuperPoint(model)`` takes a :class:`SuperPointNet` or :class:`SuperPointNet_gauss2` (in eval
semantics: batch norm uses its running statistics) and returns the same ``semi`` / ``desc``
(and ``seg``) up to float rounding. What changes is only how the work is done:

* batch norm is folded into the convolutions once, weights are cast to the compute dtype once
  (no per-call autocast casts);
* activations are channels-last (NHWC), which oneDNN and cuDNN run fastest; the 1x1 head
  layers are matrix products on the NHWC maps, the two 3x3 head layers one 512-channel conv;
* the first convolution has a single input channel, which oneDNN handles poorly (about 5 % of
  the machine's speed, on the AVX-512 + VNNI + BF16 CPU measured): it is a matrix product over
  the 9 pixels of each 3x3 patch instead;
* 2x2 max-pooling comes before the ReLU (they commute), on strided NHWC views, so the ReLU
  touches a quarter of the data and the slow CPU max-pool kernel is avoided;
* on the CPU the full-resolution block (conv1a, conv1b, pool) is computed in horizontal strips
  of ``strip_rows`` rows with a 2-row halo. The strip buffers stay in cache and, unlike
  whole-image buffers (78 MB at 480x640 in fp32), are reused by the C allocator instead of
  being mapped fresh from the kernel on every call: on the machine this was measured on (AMD EPYC,
  2 vCPUs, AVX-512 + VNNI + BF16), those
  page faults made the fp32 forward at 480x640 about 20 % slower (615 vs 499 ms single-thread
  CPU time; docs/DEPLOYMENT.md).

Precision: each of the five blocks (conv1*, conv2*, conv3*, conv4*, heads) computes in its own
dtype (float32; bfloat16 on CPUs with native bf16 or on GPUs; float16 on GPUs); the named
choices are in :data:`PRECISIONS` (``mixed``: bf16 at full and half resolution, 65 % of the
FLOPs, fp32 from there on). The outputs are float32.
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from models.superpoint import SuperPointNet
from models.superpoint_bn import SuperPointNet_gauss2

ENCODER = ("conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b")
HEADS = ("convPa", "convPb", "convDa", "convDb")


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 weight and bias of ``bn(conv(x))`` as one convolution (batch norm in eval mode).

    The project's one batch-norm folding (the fast engine here, homographic adaptation's detector in
    :func:`models.homography_adaptation.prepare_detector`). The arithmetic is torch's
    ``torch.nn.utils.fusion.fuse_conv_bn_weights``: ``w * (gamma * rsqrt(var + eps))`` and
    ``(b - mean) * rsqrt(var + eps) * gamma + beta``. With ``bn`` None the convolution's own weight
    and bias (zeros when it has none). The tensors are fresh copies, detached from ``conv`` and ``bn``.
    """
    w = conv.weight.detach().float()
    b = conv.bias.detach().float() if conv.bias is not None else None
    if bn is None:
        return w.clone(), b.clone() if b is not None else torch.zeros(w.shape[0], device=w.device)
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_batchnorm: the batch norm keeps no running statistics (track_running_stats=False)")

    def plain(t):
        return None if t is None else t.detach().float()

    w, b = fuse_conv_bn_weights(w, b, plain(bn.running_mean), plain(bn.running_var), bn.eps,
                                plain(bn.weight), plain(bn.bias))
    return w.detach(), b.detach()


def folded_layers(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 12 convolutions of a SuperPoint network as ``name -> (weight, bias)``, batch norm folded.

    Names follow :class:`SuperPointNet` (``conv1a`` .. ``conv4b``, ``convPa``, ``convPb``, ``convDa``,
    ``convDb``) for both network classes.
    """
    if isinstance(model, SuperPointNet):
        return {n: fold_batchnorm(getattr(model, n), None) for n in ENCODER + HEADS}
    if isinstance(model, SuperPointNet_gauss2):
        blocks = [model.inc.conv.conv, model.down1.mpconv[1].conv, model.down2.mpconv[1].conv,
                  model.down3.mpconv[1].conv]
        out = {}
        for i, seq in enumerate(blocks):  # conv, bn, relu, conv, bn, relu
            out[ENCODER[2 * i]] = fold_batchnorm(seq[0], seq[1])
            out[ENCODER[2 * i + 1]] = fold_batchnorm(seq[3], seq[4])
        for n in HEADS:
            out[n] = fold_batchnorm(getattr(model, n), getattr(model, "bn" + n[4:]))
        return out
    raise TypeError(f"FastSuperPoint: unsupported network {type(model).__name__} "
                    f"(expected SuperPointNet or SuperPointNet_gauss2)")


def _pool2_relu(y: torch.Tensor) -> torch.Tensor:
    """relu(max_pool2d(y, 2)) for ``B x C x H x W`` (even H, W); fast on channels-last tensors."""
    if not y.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(y, 2).relu_()
    B, C, H, W = y.shape
    rows = y.permute(0, 2, 3, 1).reshape(B, H // 2, 2, (W // 2) * 2 * C)
    pairs = torch.maximum(rows[:, :, 0], rows[:, :, 1]).view(B, H // 2, W // 2, 2, C)
    return torch.maximum(pairs[:, :, :, 0], pairs[:, :, :, 1]).relu_().permute(0, 3, 1, 2)


@contextlib.contextmanager
def ieee_fp32_convolutions(active: bool = True):
    """cuDNN computes float32 convolutions in IEEE fp32 inside the block, not TF32 (PyTorch's
    default on Ampere and later GPUs, with fp16-like rounding); the setting is restored after."""
    if not active:
        yield
        return
    conv = torch.backends.cudnn.conv
    old = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = old


BLOCKS = ("block1", "block2", "block3", "block4", "heads")  # the units a precision assigns dtypes to


class FastSuperPoint(nn.Module):
    """Inference-only SuperPoint: ``B x 1 x H x W`` gray in [0, 1] (H, W multiples of 8) ->
    ``{"semi": B x 65 x H/8 x W/8, "desc": B x D x H/8 x W/8 (unit L2)[, "seg"]}``, float32.

    ``precision``: a name of :data:`PRECISIONS` or a tuple of 5 dtypes, one per block of
    :data:`BLOCKS` (conv1*, conv2*, conv3*, conv4*, the heads and the segmentation head). The
    product of conv1a is always computed in float32 (it is memory-bound, so this is nearly free,
    and feeding the image to the network in bf16 moves about twice as many keypoints).
    Built from a trained network: its weights are copied; later changes to it are not seen.
    """

    def __init__(self, model: nn.Module, precision: str | tuple = "fp32", strip_rows: int = 64):
        super().__init__()
        if strip_rows < 0 or strip_rows % 2:
            raise ValueError(f"strip_rows must be an even number >= 0, got {strip_rows}")
        if isinstance(precision, str):
            if precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
            precision = PRECISIONS[precision]
        if len(precision) != len(BLOCKS):
            raise ValueError(f"precision: expected {len(BLOCKS)} dtypes ({', '.join(BLOCKS)}), got {precision}")
        self.dtypes = tuple(precision)
        self.strip_rows = int(strip_rows)
        layers = folded_layers(model)
        device = layers["conv1a"][0].device

        def param(t, dt):
            return nn.Parameter(t.to(device=device, dtype=dt), requires_grad=False)

        w1a, b1a = layers["conv1a"]
        self.w1a = param(w1a.reshape(w1a.shape[0], 9).t().contiguous(), torch.float32)  # 9 x 64
        self.b1a = param(b1a, torch.float32)
        for i, n in enumerate(ENCODER[1:], start=1):
            w, b = layers[n]
            dt = self.dtypes[i // 2]
            setattr(self, "w" + n[4:], param(w.contiguous(memory_format=torch.channels_last), dt))
            setattr(self, "b" + n[4:], param(b, dt))
        dt = self.dtypes[4]
        (wpa, bpa), (wda, bda) = layers["convPa"], layers["convDa"]
        self.wa = param(torch.cat([wpa, wda]).contiguous(memory_format=torch.channels_last), dt)
        self.ba = param(torch.cat([bpa, bda]), dt)
        self.split = wpa.shape[0]
        (wpb, bpb), (wdb, bdb) = layers["convPb"], layers["convDb"]
        self.wpb, self.bpb = param(wpb.flatten(1), dt), param(bpb, dt)
        self.wdb, self.bdb = param(wdb.flatten(1), dt), param(bdb, dt)
        self.seg_head = None
        if getattr(model, "seg_head", None) is not None:
            self.seg_head = copy.deepcopy(model.seg_head).eval().to(dtype=dt)
            self.seg_head.requires_grad_(False)

    # ---- full-resolution block --------------------------------------------------------------
    def _conv1a(self, xpad: torch.Tensor) -> torch.Tensor:
        """conv1a + ReLU on ``B x 1 x (h+2) x (W+2)`` (already padded) -> ``B x 64 x h x W`` NHWC."""
        B, _, hp, wp = xpad.shape
        h, w = hp - 2, wp - 2
        img = xpad[:, 0]
        patches = torch.stack([img[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], dim=-1)
        out = torch.addmm(self.b1a, patches.reshape(-1, 9), self.w1a).relu_().to(self.dtypes[0])
        return out.view(B, h, w, -1).permute(0, 3, 1, 2)

    def _block1(self, x: torch.Tensor) -> torch.Tensor:
        """relu(pool(relu(conv1b(relu(conv1a(x)))))) -> ``B x 64 x H/2 x W/2`` in block 2's dtype."""
        B, _, H, W = x.shape
        x = x.float()
        s = self.strip_rows
        if x.device.type != "cpu" or s == 0 or s >= H:
            a = self._conv1a(F.pad(x, (1, 1, 1, 1)))
            return _pool2_relu(F.conv2d(a, self.w1b, self.b1b, padding=1)).to(self.dtypes[1])
        xp = F.pad(x, (1, 1, 2, 2))
        out = torch.empty(B, H // 2, W // 2, self.w1b.shape[0], device=x.device, dtype=self.dtypes[1])
        for top in range(0, H, s):
            bottom = min(top + s, H)
            # conv1a rows top-1 .. bottom (inclusive) feed conv1b rows top .. bottom-1
            a = self._conv1a(xp[:, :, top:bottom + 4])
            if top == 0:
                a[:, :, 0] = 0  # row -1 is conv1b's zero padding, not conv1a of zeros
            if bottom == H:
                a[:, :, -1] = 0
            y = F.conv2d(a, self.w1b, self.b1b, padding=(0, 1))
            out[:, top // 2:bottom // 2] = _pool2_relu(y).permute(0, 2, 3, 1)
        return out.permute(0, 3, 1, 2)

    # ---- the rest ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(f"FastSuperPoint: expected B x 1 x H x W images with H, W multiples of 8, "
                             f"got shape {tuple(x.shape)}")
        # fp32 means fp32 on a GPU too (TF32 rounding changes results as much as fp16 does)
        with ieee_fp32_convolutions(x.is_cuda and torch.float32 in self.dtypes):
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> dict:
        d = self.dtypes
        y = self._block1(x)
        y = F.conv2d(y, self.w2a, self.b2a, padding=1).relu_()
        y = _pool2_relu(F.conv2d(y, self.w2b, self.b2b, padding=1)).to(d[2])
        y = F.conv2d(y, self.w3a, self.b3a, padding=1).relu_()
        y = _pool2_relu(F.conv2d(y, self.w3b, self.b3b, padding=1)).to(d[3])
        y = F.conv2d(y, self.w4a, self.b4a, padding=1).relu_()
        feat = F.conv2d(y, self.w4b, self.b4b, padding=1).relu_().to(d[4])
        heads = F.conv2d(feat, self.wa, self.ba, padding=1).relu_().permute(0, 2, 3, 1)  # B Hc Wc 512
        semi = F.linear(heads[..., :self.split], self.wpb, self.bpb)
        desc = F.linear(heads[..., self.split:], self.wdb, self.bdb).float()
        out = {"semi": semi.float().permute(0, 3, 1, 2),
               "desc": F.normalize(desc, p=2, dim=-1).permute(0, 3, 1, 2)}
        if self.seg_head is not None:
            out["seg"] = self.seg_head(feat, x.shape[-2:]).float()
        return out


# --------------------------------------------------------------------------------------------
# choosing the arrangement and precision for a device
# --------------------------------------------------------------------------------------------
_F32, _BF16, _F16 = torch.float32, torch.bfloat16, torch.float16
# precision name -> dtype of each block of BLOCKS (block1 .. block4, heads)
PRECISIONS = {
    "fp32": (_F32,) * 5,
    "mixed": (_BF16, _BF16, _F32, _F32, _F32),  # bf16 at full and half resolution: 65 % of the FLOPs
    "bf16": (_BF16,) * 5,
    "fp16": (_F16,) * 5,
}


def layer_dtypes(precision: str | tuple) -> dict[str, torch.dtype]:
    """The dtype each of the 12 convolutions computes in under ``precision`` (conv1a: float32)."""
    dtypes = PRECISIONS[precision] if isinstance(precision, str) else tuple(precision)
    out = {"conv1a": torch.float32}
    for i, n in enumerate(ENCODER[1:], start=1):
        out[n] = dtypes[i // 2]
    out.update({n: dtypes[4] for n in HEADS})
    return out


def resolve_inference_precision(precision: str, device: torch.device) -> str:
    """The precision name (a key of :data:`PRECISIONS`) to run inference with on ``device``.

    ``auto`` is fp32 on every device: it is the one choice that leaves HPatches results
    unchanged (docs/DEPLOYMENT.md). ``mixed`` and ``bf16`` (CPUs with native bf16, GPUs) and
    ``fp16`` (GPUs) are faster, but move keypoints and matches enough to change homography
    accuracy on the embedded HPatches-style set by 0.02-0.12, so they are opt-in; so is ``int8``
    (CPU only: ONNX Runtime on a statically quantized export, :mod:`models.int8`; not a
    :data:`PRECISIONS` entry of the fast engine). Inference reads only ``inference.precision``;
    the top-level ``precision`` is training's.
    """
    from utils.config import ConfigError

    if precision == "auto":
        return "fp32"
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(f"inference.precision: int8 runs on the CPU only (ONNX Runtime's CPU provider), "
                              f"device is {device}; use fp32, fp16 or bf16 on a GPU")
        return precision
    if precision not in PRECISIONS:
        raise ConfigError(f"inference.precision: unknown value {precision!r} "
                          f"(expected auto, {', '.join(PRECISIONS)}, int8)")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("inference.precision: fp16 needs a CUDA device (use fp32, mixed or bf16 on the CPU)")
    if precision in ("bf16", "mixed") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"inference.precision: {precision} is not supported by this GPU (use fp16 or fp32)")
    return precision
