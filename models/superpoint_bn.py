"""SuperPoint with batch norm, the variant used for training (``SuperPointNet_gauss2``).

Module names follow the reference PyTorch implementation (``inc``, ``down1..3``, ``convPa``,
``bnPa``, ...) so that its checkpoints (``superPointNet_<iter>_checkpoint.pth.tar``) load as is.
Each encoder block is conv-BN-ReLU twice; blocks 2-4 start with a 2x2 max-pool.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class _InBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _DoubleConv(cin, cout)

    def forward(self, x):
        return self.conv(x)


class _DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), _DoubleConv(cin, cout))

    def forward(self, x):
        return self.mpconv(x)


class SuperPointNet_gauss2(nn.Module):
    """Input ``B x 1 x H x W`` gray in [0, 1] (H, W multiples of 8).

    Output dict: ``semi`` ``B x 65 x H/8 x W/8`` logits, ``desc`` ``B x D x H/8 x W/8`` unit vectors,
    and ``seg`` ``B x C x H x W`` logits when a segmentation head is configured.
    """

    # the network's parts by child module (``model.freeze`` names parts)
    PARTS = {"encoder": ("inc", "down1", "down2", "down3"), "detector": ("convPa", "bnPa", "convPb", "bnPb"),
             "descriptor": ("convDa", "bnDa", "convDb", "bnDb"), "segmentation": ("seg_head",)}

    def __init__(self, descriptor_dim: int = 256, seg_head: nn.Module | None = None):
        super().__init__()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.inc = _InBlock(1, c1)
        self.down1 = _DownBlock(c1, c2)
        self.down2 = _DownBlock(c2, c3)
        self.down3 = _DownBlock(c3, c4)
        self.convPa = nn.Conv2d(c4, c5, 3, padding=1)
        self.bnPa = nn.BatchNorm2d(c5)
        self.convPb = nn.Conv2d(c5, 65, 1)
        self.bnPb = nn.BatchNorm2d(65)
        self.convDa = nn.Conv2d(c4, c5, 3, padding=1)
        self.bnDa = nn.BatchNorm2d(c5)
        self.convDb = nn.Conv2d(c5, descriptor_dim, 1)
        self.bnDb = nn.BatchNorm2d(descriptor_dim)
        if seg_head is not None:
            self.seg_head = seg_head

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 1 x H x W`` -> 1/8-resolution features ``B x 128 x H/8 x W/8``."""
        return self.down3(self.down2(self.down1(self.inc(x))))

    def describe(self, feat: torch.Tensor) -> torch.Tensor:
        """Encoder features -> unit descriptors ``B x D x H/8 x W/8`` (the descriptor head)."""
        return F.normalize(self.bnDb(self.convDb(F.relu(self.bnDa(self.convDa(feat))))), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> dict:
        feat = self.encode(x)
        semi = self.bnPb(self.convPb(F.relu(self.bnPa(self.convPa(feat)))))
        out = {"semi": semi, "desc": self.describe(feat)}
        if hasattr(self, "seg_head"):
            out["seg"] = self.seg_head(feat, x.shape[-2:])
        return out
