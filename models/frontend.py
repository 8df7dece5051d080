"""One call from images to keypoints, scores and descriptors (used by every export and demo).

    frontend = Frontend(model, **keypoint_settings(config["model"]))
    out = frontend(images)          # images: B x 1 x H x W gray in [0, 1]
    out.keypoints.points            # B x K x 2 (x, y), sorted by score, padded (see .mask)
    out.descriptors                 # B x K x D, unit L2

Post-processing (threshold, NMS, border removal, top-k, subpixel) is ``utils.keypoints``'s,
batched, on the model's device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.keypoints import Keypoints, extract_keypoints, sample_descriptors, semi_to_heatmap


def keypoint_settings(model_config: dict) -> dict:
    """The post-processing keyword arguments of :class:`Frontend` from a ``model:`` config section."""
    sub = model_config.get("subpixel") or {}
    top_k = model_config.get("top_k") or 0
    return {
        "detection_threshold": float(model_config["detection_threshold"]),
        "nms_radius": int(model_config["nms"]),
        "border": int(model_config.get("remove_borders", 4)),
        "top_k": int(top_k) if top_k else None,
        "subpixel": bool(sub.get("enable", False)),
        "patch_size": int(sub.get("patch_size", 5)),
    }


@dataclass
class FrontendOutput:
    keypoints: Keypoints          # points B x K x 2, scores B x K, mask B x K
    descriptors: torch.Tensor     # B x K x D
    heatmap: torch.Tensor         # B x 1 x H x W
    raw: dict                     # the network's outputs (semi, desc[, seg])


class Frontend:
    """Wraps a SuperPoint network with the keypoint post-processing."""

    def __init__(self, model: torch.nn.Module, detection_threshold: float = 0.015, nms_radius: int = 4,
                 border: int = 4, top_k: int | None = None, subpixel: bool = False, patch_size: int = 5,
                 autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.border = border
        self.top_k = top_k
        self.subpixel = subpixel
        self.patch_size = patch_size
        self.autocast_dtype = autocast_dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> FrontendOutput:
        images = images.to(self.device)
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                raw = self.model(images)
        else:
            raw = self.model(images)
        heat = semi_to_heatmap(raw["semi"])
        kp = extract_keypoints(heat, self.detection_threshold, self.nms_radius, self.border,
                               self.top_k, self.subpixel, self.patch_size)
        desc = sample_descriptors(raw["desc"].float(), kp.points)
        return FrontendOutput(kp, desc, heat, raw)
