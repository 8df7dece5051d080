"""Batching of dataset items with a variable number of keypoints."""
from __future__ import annotations

import torch
from torch.utils.data import default_collate


def collate(items: list[dict]) -> dict:
    """Stack tensors; pad ``keypoints`` (``N_i x 2``) to ``B x N x 2`` with a ``keypoint_mask``
    (``B x N`` bool); keep strings and other values as lists."""
    out: dict = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key == "keypoints":
            n = max(v.shape[0] for v in values)
            pts = torch.zeros(len(values), n, 2, dtype=torch.float32)
            mask = torch.zeros(len(values), n, dtype=torch.bool)
            for i, v in enumerate(values):
                pts[i, : v.shape[0]] = v
                mask[i, : v.shape[0]] = True
            out["keypoints"], out["keypoint_mask"] = pts, mask
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            out[key] = default_collate(values)
        else:
            out[key] = values
    return out
