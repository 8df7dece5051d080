"""MagicPoint (``train_base``): the detector alone, on labelled images (Synthetic Shapes).

Loss: 65-way cell cross entropy on the (augmented) image, and on its warped copy when
``data.warped_pair.enable`` is set. Validation: precision / recall / mAP of the detections
(``evaluations.detection_pr``) against the labels.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets import get_dataset
from datasets.augmentation import Randomness
from datasets.pairs import prepare_batch
from evaluations.detection_pr import DetectionAccumulator
from models.frontend import Frontend
from training.losses import detector_loss
from utils.draw import GREEN, RED, draw_keypoints

# detections down to this score enter the precision-recall curve (mAP)
MAP_MIN_SCORE = 1e-4


def label_points(label_map: torch.Tensor) -> list[np.ndarray]:
    """``B x 1 x H x W`` binary map -> per image ``N x 2`` (x, y) arrays."""
    out = []
    for m in label_map[:, 0].cpu():
        ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
        out.append(torch.stack([xs, ys], dim=1).float().numpy())
    return out


def keypoint_overlay(image: torch.Tensor, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Gray image ``H x W`` in [0,1] -> ``H x W x 3`` uint8 with ground truth (red) and detections (green)."""
    gray = image.float().clamp(0, 1).cpu().numpy()
    with_gt = draw_keypoints(gray, gt, RED, radius=2.0, thickness=-1)
    return draw_keypoints(with_gt, pred, GREEN, radius=1.0, thickness=-1)


def detect_keypoints(model, images: torch.Tensor, model_cfg: dict, min_score: float):
    """:class:`utils.keypoints.Keypoints` of ``images`` down to ``min_score`` (the detector
    validation's): the front end's post-processing with ``model_cfg``'s ``nms`` and
    ``remove_borders``; every detection is kept (no top-k) at its pixel (no subpixel refinement),
    since the precision-recall curve needs them all."""
    frontend = detection_frontend(model, model_cfg, min_score)
    return frontend.keypoints(frontend.heatmap(frontend.network(images)))


def detection_frontend(model, model_cfg: dict, min_score: float) -> Frontend:
    """The front end of :func:`detect_keypoints` (``model`` may be None to post-process only)."""
    return Frontend(model, detection_threshold=float(min_score), nms_radius=int(model_cfg["nms"]),
                    border=int(model_cfg["remove_borders"]), top_k=None, subpixel=False)


class DetectorTask:
    """Shared by MagicPoint and SuperPoint: data, detector loss, detector validation."""

    # The descriptor head gets no gradient from the detector loss (DistributedDataParallel must
    # look for unused parameters).
    unused_parameters = True

    def __init__(self, config: dict):
        self.config = config
        self.data_cfg = config["data"]
        self.model_cfg = config["model"]

    def datasets(self):
        return get_dataset(self.config, "train"), get_dataset(self.config, "val")

    def prepare(self, batch: dict, training: bool, rng: Randomness, device: torch.device) -> dict:
        return prepare_batch(batch, self.data_cfg, training, rng, device)

    def _label(self, prepared: dict, prefix: str = "") -> torch.Tensor:
        return prepared.get(f"{prefix}label_heat", prepared[f"{prefix}label_map"])

    def forward_pair(self, model, prepared: dict) -> dict:
        """The network's outputs on the image and, if there is one, on its warped copy:
        ``{"": out, "warped_": out}``.

        One forward pass on the stacked ``2B`` batch: distributed data parallel expects one
        forward per backward (and batch norm sees both views in one batch).
        """
        image = prepared["image"]
        if "warped_image" not in prepared:
            return {"": model(image)}
        out = model(torch.cat([image, prepared["warped_image"]], dim=0))
        B = image.shape[0]
        return {"": {k: v[:B] for k, v in out.items()}, "warped_": {k: v[B:] for k, v in out.items()}}

    def detector_losses(self, model, prepared: dict) -> tuple[torch.Tensor, dict, dict]:
        outs = self.forward_pair(model, prepared)
        loss, logs = self.detector_losses_of(outs, prepared)
        return loss, logs, outs

    def detector_losses_of(self, outs: dict, prepared: dict) -> tuple[torch.Tensor, dict]:
        """Detector loss on the image (and on the warped image) from the network's outputs."""
        loss = detector_loss(outs[""]["semi"], self._label(prepared), prepared["valid_mask"])
        logs = {"loss_det": loss.detach()}
        if "warped_" in outs:
            wloss = detector_loss(outs["warped_"]["semi"], self._label(prepared, "warped_"),
                                  prepared["warped_valid_mask"])
            logs["loss_det_warp"] = wloss.detach()
            loss = loss + wloss
        return loss, logs

    def loss(self, model, prepared: dict):
        loss, logs, _ = self.detector_losses(model, prepared)
        return loss, logs

    def detect(self, model, images: torch.Tensor, min_score: float):
        return detect_keypoints(model, images, self.model_cfg, min_score)

    def detections_of(self, semi: torch.Tensor, min_score: float):
        """Keypoints scoring at least ``min_score`` from the network's cell logits ``semi`` (for a
        caller that already ran the network)."""
        frontend = detection_frontend(None, self.model_cfg, min_score)
        return frontend.keypoints(frontend.heatmap({"semi": semi}))

    def validate(self, model, batches, device: torch.device) -> dict:
        acc = DetectionAccumulator(distance=2.0)
        rng = Randomness.from_seed(0, device)
        for batch in batches:
            self.validate_detections(acc, model, self.prepare(batch, False, rng, device))
        return self.detection_metrics(acc)

    def validate_detections(self, acc: DetectionAccumulator, model, prepared: dict,
                            semi: torch.Tensor | None = None) -> None:
        """Add one prepared batch's detections (down to MAP_MIN_SCORE) to ``acc``; ``semi``: the
        network's outputs on ``prepared["image"]`` when the caller has them (no second forward)."""
        kp = self.detect(model, prepared["image"], MAP_MIN_SCORE) if semi is None \
            else self.detections_of(semi, MAP_MIN_SCORE)
        for gt, pts in zip(label_points(prepared["label_map"]), kp.to_list()):
            pts = pts.float().cpu().numpy()
            acc.add(pts[:, :2], pts[:, 2], gt)

    def detection_metrics(self, acc: DetectionAccumulator) -> dict:
        res = acc.result(float(self.model_cfg["detection_threshold"]))
        return {k: float(v) for k, v in res.items() if k in ("precision", "recall", "mAP")}

    def show(self, model, prepared: dict) -> dict:
        kp = self.detect(model, prepared["image"][:1], float(self.model_cfg["detection_threshold"]))
        pred = kp.to_list()[0][:, :2].float().cpu().numpy()
        gt = label_points(prepared["label_map"][:1])[0]
        return {"keypoints": keypoint_overlay(prepared["image"][0, 0], gt, pred)}


MagicPointTask = DetectorTask
