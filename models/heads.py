"""Extra heads over the shared SuperPoint encoder."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPPHead(nn.Module):
    """A light atrous-spatial-pyramid-pooling decoder for semantic segmentation.

    Over the 1/8 encoder features it runs, in parallel, a 1x1 branch, one 3x3 branch per
    dilation rate and an image-pooling branch (global average, 1x1 conv, broadcast back); the
    branches are concatenated, projected by a 1x1 conv, and a 1x1 classifier gives
    ``num_classes`` logits that are upsampled bilinearly to the input size.

    ``forward(features: B x in_channels x h x w, image_size: (H, W)) -> B x num_classes x H x W``
    """

    def __init__(self, num_classes: int = 34, in_channels: int = 128, channels: int = 128,
                 aspp_rates: Sequence[int] = (6, 12, 18), dropout: float = 0.1):
        super().__init__()
        if num_classes < 1 or in_channels < 1 or channels < 1:
            raise ValueError("model.segmentation_head: num_classes, in_channels and channels must be >= 1")
        if any(int(r) < 1 for r in aspp_rates):
            raise ValueError(f"model.segmentation_head.aspp_rates: rates must be >= 1, got {list(aspp_rates)}")
        self.branch1x1 = _conv_bn_relu(in_channels, channels, 1)
        self.atrous = nn.ModuleList(_conv_bn_relu(in_channels, channels, 3, int(r)) for r in aspp_rates)
        # no batch norm on the pooled 1x1 map: with batch size 1 it would see one value per channel
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1),
                                  nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu((2 + len(aspp_rates)) * channels, channels, 1),
                                     nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, features: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        h, w = features.shape[-2:]
        pooled = self.pool(features).expand(-1, -1, h, w)
        branches = [self.branch1x1(features), *(b(features) for b in self.atrous), pooled]
        logits = self.classifier(self.project(torch.cat(branches, dim=1)))
        # sizes are not cast to int: an ONNX / TorchScript trace keeps them dynamic
        return F.interpolate(logits, size=tuple(image_size), mode="bilinear", align_corners=False)


def build_segmentation_head(head_config: dict) -> ASPPHead:
    """The head described by ``model.segmentation_head`` of a merged config (every key present;
    its ``enable`` and ``loss_weight`` are read by the caller)."""
    return ASPPHead(num_classes=int(head_config["num_classes"]),
                    in_channels=int(head_config["in_channels"]),
                    channels=int(head_config["channels"]),
                    aspp_rates=tuple(head_config["aspp_rates"]),
                    dropout=float(head_config["dropout"]))
