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


def keep_mask(raw: dict, drop_classes: list[int], size) -> torch.Tensor:
    """``B x 1 x H x W`` float, 0 where the segmentation head predicts one of ``drop_classes``."""
    if "seg" not in raw:
        raise ValueError("keypoints on segmentation classes can only be dropped by a model with a "
                         "segmentation head (model.segmentation_head.enable: true)")
    seg = raw["seg"]
    if tuple(seg.shape[-2:]) != tuple(size):
        seg = torch.nn.functional.interpolate(seg.float(), size=tuple(size), mode="bilinear", align_corners=False)
    ids = seg.argmax(dim=1, keepdim=True)
    drop = torch.isin(ids, torch.tensor(drop_classes, device=ids.device))
    return (~drop).float()


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
                 autocast_dtype: torch.dtype | None = None, drop_classes: list[int] | None = None):
        self.model = model
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.border = border
        self.top_k = top_k
        self.subpixel = subpixel
        self.patch_size = patch_size
        self.autocast_dtype = autocast_dtype
        # segmentation classes on which keypoints are not wanted (sky, moving objects, ...)
        self.drop_classes = sorted(set(int(c) for c in drop_classes)) if drop_classes else []

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
        if self.drop_classes:
            heat = heat * keep_mask(raw, self.drop_classes, heat.shape[-2:])
        kp = extract_keypoints(heat, self.detection_threshold, self.nms_radius, self.border,
                               self.top_k, self.subpixel, self.patch_size)
        desc = sample_descriptors(raw["desc"].float(), kp.points)
        return FrontendOutput(kp, desc, heat, raw)
