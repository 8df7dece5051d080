"""Losses. Inputs are network outputs and label tensors; nothing here reads files or configs
beyond the values passed in."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.keypoints import cell_targets, cell_valid_mask


def detector_loss(semi: torch.Tensor, label_map: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """65-way cross entropy between cell logits and (soft) cell targets, over valid cells.

    Args:
        semi: ``B x 65 x Hc x Wc`` logits.
        label_map: ``B x 1 x H x W`` binary keypoint map or Gaussian heatmap (see
            ``utils.keypoints.cell_targets``).
        valid_mask: ``B x 1 x H x W``; a cell counts only if all its pixels are valid.
    Returns:
        scalar: the mean over images of each image's mean loss over its valid cells (an image
        without valid cells adds 0). Normalising per image makes the loss of a batch the mean of
        the losses of any split of it, so N processes with batch B train exactly like one process
        with batch N*B (distributed data parallel averages the processes' gradients).
    """
    targets = cell_targets(label_map)
    ce = -(targets * F.log_softmax(semi.float(), dim=1)).sum(dim=1)  # B Hc Wc
    if valid_mask is None:
        return ce.mean()
    mask = cell_valid_mask(valid_mask)
    per_image = (ce * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1.0)
    return per_image.mean()
