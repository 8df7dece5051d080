"""Seeded stand-in weights: a SuperPoint network that behaves like a detector without training.

For benchmarks and tests while no trained weights are available. Default PyTorch init gives an
almost flat heatmap (every pixel near 1/65, so nearly all pixels pass a 0.015 threshold), which
makes post-processing timings and precision checks meaningless. These weights instead keep the
activation scale through the layers (He-normal), make the first layer blind to flat image
regions (zero-mean kernels, zero biases) and give the dustbin a large bias, so that keypoints
appear only on image structure: on 480x640 photographs about 100-2000 points (mean ~850) survive
threshold 0.015 / NMS 4, with peak scores up to ~0.8, a heatmap much like a trained detector's.
They are random filters, not a detector: use them to time and to compare code paths, never to
judge detection quality.
"""
from __future__ import annotations

import torch
import torch.nn as nn

DETECTOR_GAIN = 10.0     # scale of the 65-channel cell logits
DUSTBIN_BIAS = 9.0       # "no keypoint" logit bias; higher = fewer keypoints


@torch.no_grad()
def seeded_stand_in(model: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite the convolutions of a SuperPoint network in place with seeded stand-in weights.

    Works for any network whose first convolution has one input channel and whose detector
    convolution has 65 outputs (SuperPointNet, SuperPointNet_gauss2; batch norm is left as is).
    Returns ``model`` (in eval mode).
    """
    g = torch.Generator().manual_seed(seed)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        fan_in = conv.weight[0].numel()
        w = torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
        if conv.in_channels == 1:
            w -= w.mean(dim=(1, 2, 3), keepdim=True)  # flat image regions give zero response
        conv.weight.copy_(w)
        if conv.bias is not None:
            conv.bias.zero_()
        if conv.out_channels == 65:
            conv.weight.mul_(DETECTOR_GAIN)
            conv.bias[64] = DUSTBIN_BIAS
    return model.eval()
