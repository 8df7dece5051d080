"""SuperPoint (``train_joint``): detector and descriptor trained together on image pairs.

Each training item is an image with exported keypoint labels; ``datasets.pairs.prepare_batch``
(``data.warped_pair.enable: true``) adds a homography-warped copy with warped labels and valid
masks, and photometric augmentation on both. The loss is

    detector_loss(image) + detector_loss(warped image) + lambda_loss * descriptor_loss

with the descriptor loss chosen by ``model.dense_loss.enable`` (the paper's dense hinge loss) or
``model.sparse_loss.enable`` (sampled correspondences, the reference implementation's default);
see ``training.descriptor_losses`` for the definitions and normalisations.

Validation (``--eval``) adds to the detector's precision / recall / mAP the descriptor matching
accuracy on the warped pairs of the validation batches (fixed seed): keypoints are detected on
both images with the configured post-processing (``models.frontend``), matched as mutual nearest
neighbours of their descriptors, and a match is correct when the keypoint of A, warped by the
known homography, lands within ``model.descriptor_validation.match_distance`` pixels of its match.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets import canonical_name
from datasets.augmentation import Randomness
from evaluations.detection_pr import DetectionAccumulator
from evaluations.segmentation import confusion_matrix, scores_from_confusion
from models.frontend import Frontend, FrontendOutput, keypoint_settings
from training.descriptor_losses import (
    dense_descriptor_loss,
    infonce_descriptor_loss,
    sample_sparse_pairs,
    sparse_descriptor_loss,
)
from training.losses_segmentation import segmentation_loss
from training.magicpoint import DetectorTask
from utils.config import ConfigError
from utils.draw import draw_matches
from utils.geometry import warp_points
from utils.matching import mutual_nn
from utils.segmentation_labels import num_classes


def mutual_nn_matches(desc_a: torch.Tensor, mask_a: torch.Tensor, desc_b: torch.Tensor,
                      mask_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours by descriptor similarity, batched over padded keypoint sets.

    Args:
        desc_a ``B x Ka x D``, mask_a ``B x Ka`` bool; desc_b ``B x Kb x D``, mask_b ``B x Kb``.
    Returns:
        (``B x Ka`` index of each A keypoint's nearest neighbour in B, ``B x Ka`` bool: the pair
        is mutual and both keypoints are real); see :func:`utils.matching.mutual_nn`.
    """
    # negated similarity as the distance: the same order as the L2 distance of unit descriptors
    return mutual_nn(-torch.bmm(desc_a.float(), desc_b.float().transpose(1, 2)), mask_a, mask_b)


def matching_counts(out_a: FrontendOutput, out_b: FrontendOutput, homography: torch.Tensor,
                    distance: float) -> tuple[int, int]:
    """(correct, total) mutual nearest-neighbour matches of a batch of pairs (A -> B homographies)."""
    ka, kb = out_a.keypoints, out_b.keypoints
    ab, mutual = mutual_nn_matches(out_a.descriptors, ka.mask, out_b.descriptors, kb.mask)
    if ab.shape[1] == 0:
        return 0, 0
    warped = warp_points(ka.points.double(), homography.to(ka.points.device).double())
    target = kb.points.double().gather(1, ab.unsqueeze(-1).expand(-1, -1, 2))
    err = torch.linalg.norm(warped - target, dim=-1)
    correct = mutual & (err <= distance)
    return int(correct.sum()), int(mutual.sum())


def matches_overlay(image_a: torch.Tensor, image_b: torch.Tensor, out_a: FrontendOutput, out_b: FrontendOutput,
                    homography: torch.Tensor, distance: float) -> np.ndarray:
    """A and B side by side (``H x 2W x 3`` uint8) with their mutual matches: green correct, red wrong."""
    ka, kb = out_a.keypoints, out_b.keypoints
    ab, mutual = mutual_nn_matches(out_a.descriptors[:1], ka.mask[:1], out_b.descriptors[:1], kb.mask[:1])
    keep = mutual[0]
    pa = ka.points[0].double()[keep]
    pb = kb.points[0].double()[ab[0][keep]]
    err = torch.linalg.norm(warp_points(pa, homography[0].to(pa.device).double()) - pb, dim=-1)
    gray = [img.float().clamp(0, 1).cpu().numpy() for img in (image_a, image_b)]
    return draw_matches(gray[0], gray[1], pa.cpu().numpy(), pb.cpu().numpy(), (err <= distance).cpu().numpy(), gap=0)


class SuperPointTask(DetectorTask):
    """Joint training: detector loss on both images of each pair plus the descriptor loss."""

    def __init__(self, config: dict):
        super().__init__(config)
        m = self.model_cfg
        if not self.data_cfg["warped_pair"]["enable"]:
            raise ConfigError("data.warped_pair.enable: joint training needs image pairs; set it to true")
        self.lambda_loss = float(m["lambda_loss"])
        kinds = [k for k in ("dense", "sparse", "infonce") if m[f"{k}_loss"]["enable"]]
        if len(kinds) > 1:
            raise ConfigError(f"model.{kinds[0]}_loss.enable and model.{kinds[1]}_loss.enable are both true; "
                              "enable one descriptor loss")
        if self.lambda_loss > 0 and not kinds:
            raise ConfigError("model.lambda_loss > 0 but no descriptor loss is enabled (set "
                              "model.dense_loss.enable, model.sparse_loss.enable or model.infonce_loss.enable)")
        self.descriptor_loss_kind = kinds[0] if self.lambda_loss > 0 else None
        self.dense_params = dict(m["dense_loss"]["params"])
        self.sparse_params = dict(m["sparse_loss"]["params"])
        self.infonce_params = dict(m["infonce_loss"]["params"])
        if self.descriptor_loss_kind == "sparse":
            if self.sparse_params["dist"] not in ("cos", "l2"):
                raise ConfigError(f"model.sparse_loss.params.dist: expected cos or l2, "
                                  f"got {self.sparse_params['dist']!r}")
            if self.sparse_params["method"] not in ("1d", "2d"):
                raise ConfigError(f"model.sparse_loss.params.method: expected 1d or 2d, "
                                  f"got {self.sparse_params['method']!r}")
        self.match_distance = float(m["descriptor_validation"]["match_distance"])

        seg = m["segmentation_head"]
        self.segmentation = bool(seg["enable"])
        seg_data = self.data_cfg["segmentation"]
        self.ignore_index = int(seg_data["ignore_index"])
        if self.segmentation:
            label_set = str(seg_data["label_set"])
            expected = num_classes(label_set)
            if int(seg["num_classes"]) != expected:
                raise ConfigError(f"model.segmentation_head.num_classes is {seg['num_classes']} but "
                                  f"data.segmentation.label_set '{label_set}' has {expected} classes")
            self.seg_weight = float(seg["loss_weight"])
        elif self.data_cfg["dataset"] == "coco_panoptic" and self.data_cfg["load_panoptic"]:
            # the panoptic labels feed the segmentation loss only: without the head they would be
            # decoded every step and silently unused
            raise ConfigError("data.load_panoptic: true but model.segmentation_head.enable is false, so no "
                              "segmentation loss would be trained; set model.segmentation_head.enable: true "
                              "(with model.name: SuperPointNet_gauss2), or data.load_panoptic: false")
        # Items without keypoint labels (e.g. Cityscapes with data.labels unset) train only the
        # descriptor and segmentation heads: the detector loss is skipped for them.
        may_lack_labels = self.data_cfg["labels"] is None and \
            canonical_name(self.data_cfg["dataset"]) != "synthetic_shapes"
        # parameters without gradient in some steps: DDP must be told
        self.unused_parameters = self.descriptor_loss_kind is None or may_lack_labels

    # ------------------------------------------------------------------ data
    def prepare(self, batch: dict, training: bool, rng: Randomness, device: torch.device) -> dict:
        prepared = super().prepare(batch, training, rng, device)
        if training and self.descriptor_loss_kind in ("sparse", "infonce"):
            p = self.sparse_params if self.descriptor_loss_kind == "sparse" else self.infonce_params
            # InfoNCE compares each match with every cell: it draws no negatives
            negatives = int(p["num_masked_non_matches_per_match"]) if self.descriptor_loss_kind == "sparse" else 0
            prepared["sparse_pairs"] = sample_sparse_pairs(
                prepared["homography"], prepared["image"].shape[-2:], int(p["num_matching_attempts"]),
                negatives, rng, valid_mask=prepared["valid_mask"], warped_valid_mask=prepared["warped_valid_mask"])
        return prepared

    # ------------------------------------------------------------------ loss
    def descriptor_loss(self, outs: dict, prepared: dict) -> tuple[torch.Tensor, dict]:
        desc, wdesc = outs[""]["desc"], outs["warped_"]["desc"]
        if self.descriptor_loss_kind == "dense":
            p = self.dense_params
            return dense_descriptor_loss(
                desc, wdesc, prepared["homography"], prepared["warped_valid_mask"], prepared["valid_mask"],
                lambda_d=float(p["lambda_d"]), positive_margin=float(p["positive_margin"]),
                negative_margin=float(p["negative_margin"]),
                descriptor_dist=float(p["descriptor_dist"]), chunk_size=int(p["chunk_size"]))
        if "sparse_pairs" not in prepared:
            raise ValueError("sparse descriptor loss: the batch has no sampled pairs "
                             "(prepare it with training=True)")
        if self.descriptor_loss_kind == "infonce":
            p = self.infonce_params
            return infonce_descriptor_loss(desc, wdesc, prepared["sparse_pairs"], prepared["homography"],
                                           prepared["valid_mask"], prepared["warped_valid_mask"],
                                           temperature=float(p["temperature"]), exclusion=float(p["exclusion"]))
        p = self.sparse_params
        return sparse_descriptor_loss(desc, wdesc, prepared["sparse_pairs"], lamda_d=float(p["lamda_d"]),
                                      dist=str(p["dist"]), method=str(p["method"]))

    def segmentation_loss(self, outs: dict, prepared: dict) -> torch.Tensor:
        """Cross entropy of the segmentation head on both images of the pair (ignore label outside
        each image's valid area)."""
        if "seg" not in prepared:
            raise ConfigError(f"model.segmentation_head.enable: dataset '{self.data_cfg['dataset']}' gives no "
                              f"segmentation labels (use cityscapes, or coco_panoptic with load_panoptic: true)")
        loss = segmentation_loss(outs[""]["seg"], prepared["seg"], self.ignore_index)
        if "warped_seg" in prepared:
            loss = loss + segmentation_loss(outs["warped_"]["seg"], prepared["warped_seg"], self.ignore_index)
        return loss

    def loss(self, model, prepared: dict):
        outs = self.forward_pair(model, prepared)
        if prepared.get("has_labels", True):
            loss, logs = self.detector_losses_of(outs, prepared)
        else:
            loss, logs = outs[""]["semi"].sum() * 0.0, {}
        if self.descriptor_loss_kind is not None:
            dloss, dlogs = self.descriptor_loss(outs, prepared)
            loss = loss + self.lambda_loss * dloss
            logs.update({"loss_desc": dloss.detach(), "loss_desc_pos": dlogs["pos"], "loss_desc_neg": dlogs["neg"]})
        if self.segmentation:
            sloss = self.segmentation_loss(outs, prepared)
            loss = loss + self.seg_weight * sloss
            logs["loss_seg"] = sloss.detach()
        return loss, logs

    # ------------------------------------------------------------------ validation
    def validate(self, model, batches, device: torch.device) -> dict:
        acc = DetectionAccumulator(distance=2.0)
        rng = Randomness.from_seed(0, device)
        frontend = Frontend(model, **keypoint_settings(self.model_cfg))
        correct = total = images = 0
        has_labels = False
        confusion = None
        for batch in batches:
            prepared = self.prepare(batch, False, rng, device)
            # one forward pass per image: the detections, matches and segmentation share it
            out_a = frontend(prepared["image"])
            out_b = frontend(prepared["warped_image"])
            if prepared.get("has_labels", True):
                has_labels = True
                self.validate_detections(acc, model, prepared, semi=out_a.raw["semi"])
            c, t = matching_counts(out_a, out_b, prepared["homography"], self.match_distance)
            correct, total, images = correct + c, total + t, images + prepared["image"].shape[0]
            if self.segmentation and "seg" in prepared:
                cm = self.segmentation_confusion(out_a.raw["seg"], prepared["seg"])
                confusion = cm if confusion is None else confusion + cm
        metrics = self.detection_metrics(acc) if has_labels else {}
        metrics["matching_accuracy"] = correct / total if total else 0.0
        metrics["matches_per_image"] = total / images if images else 0.0
        if confusion is not None:
            scores = scores_from_confusion(confusion)
            metrics["mIoU"] = float(scores["mIoU"])
            metrics["pixel_accuracy"] = float(scores["pixel_accuracy"])
        return metrics

    def segmentation_confusion(self, logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """Confusion counts of a batch (see ``evaluations.segmentation.confusion_matrix``)."""
        pred = logits.argmax(dim=1).cpu().numpy()
        return confusion_matrix(pred, target.cpu().numpy(), range(logits.shape[1]), self.ignore_index)

    def show(self, model, prepared: dict) -> dict:
        images = super().show(model, prepared)
        frontend = Frontend(model, **keypoint_settings(self.model_cfg))
        a = frontend(prepared["image"][:1])
        b = frontend(prepared["warped_image"][:1])
        images["matches"] = matches_overlay(prepared["image"][0, 0], prepared["warped_image"][0, 0], a, b,
                                            prepared["homography"][:1], self.match_distance)
        return images
