"""SuperPoint with MagicLeap's layer names (``superpoint_v1.pth`` loads with ``strict=True``).

A VGG-style encoder (8 convolutions, 3 max-pools, so features at 1/8 resolution) feeds two heads:
the detector (65-channel cell logits ``semi``) and the descriptor (256-D, L2-normalised ``desc``).
No batch norm; ReLU after every convolution except the heads' last 1x1 layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SuperPointNet(nn.Module):
    """Input ``B x 1 x H x W`` gray in [0, 1] (H, W multiples of 8).

    Output dict: ``semi`` ``B x 65 x H/8 x W/8`` logits, ``desc`` ``B x 256 x H/8 x W/8`` unit vectors.
    """

    # the network's parts by child module (``model.freeze`` names parts)
    PARTS = {"encoder": ("conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b"),
             "detector": ("convPa", "convPb"), "descriptor": ("convDa", "convDb")}

    def __init__(self, descriptor_dim: int = 256):
        super().__init__()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256

        def conv3(cin, cout):
            return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)

        self.conv1a, self.conv1b = conv3(1, c1), conv3(c1, c1)
        self.conv2a, self.conv2b = conv3(c1, c2), conv3(c2, c2)
        self.conv3a, self.conv3b = conv3(c2, c3), conv3(c3, c3)
        self.conv4a, self.conv4b = conv3(c3, c4), conv3(c4, c4)
        self.convPa = conv3(c4, c5)
        self.convPb = nn.Conv2d(c5, 65, kernel_size=1)
        self.convDa = conv3(c4, c5)
        self.convDb = nn.Conv2d(c5, descriptor_dim, kernel_size=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 1 x H x W`` -> 1/8-resolution features ``B x 128 x H/8 x W/8``."""
        x = F.relu(self.conv1b(F.relu(self.conv1a(x))))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2b(F.relu(self.conv2a(x))))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv3b(F.relu(self.conv3a(x))))
        x = F.max_pool2d(x, 2)
        return F.relu(self.conv4b(F.relu(self.conv4a(x))))

    def describe(self, feat: torch.Tensor) -> torch.Tensor:
        """Encoder features -> unit descriptors ``B x D x H/8 x W/8`` (the descriptor head)."""
        return F.normalize(self.convDb(F.relu(self.convDa(feat))), p=2, dim=1)

    def forward(self, x: torch.Tensor) -> dict:
        feat = self.encode(x)
        semi = self.convPb(F.relu(self.convPa(feat)))
        return {"semi": semi, "desc": self.describe(feat)}
