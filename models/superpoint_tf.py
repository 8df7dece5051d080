"""SuperPoint in the layout of the TensorFlow re-implementation (rpautrat/SuperPoint) and of its
PyTorch port (``superpoint_v6_from_tf.pth``, "SuperPoint open"): ``SuperPointTF``.

Every block is conv -> ReLU -> batch norm (eps 1e-3, TensorFlow's default), in that order, which
is why these weights cannot be mapped onto :class:`SuperPointNet_gauss2` (conv -> BN -> ReLU).
The heads end with a 1x1 conv -> BN and no ReLU. Module names follow the PyTorch port
(``backbone.<stage>.<block>.conv`` / ``.bn``, ``detector.<i>``, ``descriptor.<i>``), so its state
dict loads as is; ``utils/convert_weights.py`` maps the TensorFlow variables onto the same names.

``input_scale`` is a buffer (it travels with the weights): the network multiplies its [0, 1]
input by it, 255 for the 2018 TensorFlow MagicPoint, which was trained on [0, 255] images, 1 for
the PyTorch port, which takes [0, 1].
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3


class VGGBlock(nn.Sequential):
    """conv (``kernel_size``, 'same' padding) -> ReLU (or nothing) -> BN(eps 1e-3)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, relu: bool = True):
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)),
            ("activation", nn.ReLU(inplace=True) if relu else nn.Identity()),
            ("bn", nn.BatchNorm2d(cout, eps=BN_EPS)),
        ]))


class SuperPointTF(nn.Module):
    """Input ``B x 1 x H x W`` gray in [0, 1] (H, W multiples of 8).

    Output dict: ``semi`` ``B x 65 x H/8 x W/8`` logits (8x8 cell row-major, then the dustbin),
    ``desc`` ``B x D x H/8 x W/8`` unit vectors.
    """

    # the network's parts by child module (``model.freeze`` names parts)
    PARTS = {"encoder": ("backbone",), "detector": ("detector",), "descriptor": ("descriptor",)}

    def __init__(self, descriptor_dim: int = 256, input_scale: float = 1.0):
        super().__init__()
        channels = (64, 64, 128, 128)
        stages, cin = [], 1
        for i, c in enumerate(channels):
            layers = [VGGBlock(cin, c, 3), VGGBlock(c, c, 3)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, 2))
            stages.append(nn.Sequential(*layers))
            cin = c
        self.backbone = nn.Sequential(*stages)
        self.detector = nn.Sequential(VGGBlock(cin, 256, 3), VGGBlock(256, 65, 1, relu=False))
        self.descriptor = nn.Sequential(VGGBlock(cin, 256, 3), VGGBlock(256, descriptor_dim, 1, relu=False))
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 1 x H x W`` in [0, 1] -> 1/8-resolution features ``B x 128 x H/8 x W/8``."""
        return self.backbone(x * self.input_scale)

    def describe(self, feat: torch.Tensor) -> torch.Tensor:
        """Encoder features -> unit descriptors ``B x D x H/8 x W/8`` (the descriptor head)."""
        return F.normalize(self.descriptor(feat), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> dict:
        feat = self.encode(x)
        return {"semi": self.detector(feat), "desc": self.describe(feat)}
