"""Segmentation loss: per-pixel cross entropy with an ignore label."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.segmentation_labels import IGNORE_INDEX


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross entropy over the pixels whose label is not ``ignore_index``.

    ``logits`` ``B x C x H x W``; ``target`` ``B x H x W`` integer class ids in ``[0, C)`` or
    ``ignore_index``. Returns a scalar (0, still attached to the graph, when every pixel is
    ignored). Computed in float32 (safe under autocast).
    """
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] \
            or logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"segmentation_loss: logits B x C x H x W and target B x H x W must agree, "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    target = target.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= logits.shape[1]))
    if bool(bad.any()):
        raise ValueError(f"segmentation_loss: labels must lie in [0, {logits.shape[1]}) or be "
                         f"ignore_index={ignore_index}; found {int(target[bad][0])} (does "
                         f"model.segmentation_head.num_classes match data.segmentation.label_set?)")
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
