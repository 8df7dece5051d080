"""``export_descriptor`` / ``export_pairs``: keypoints and descriptors of a trained network on image pairs.

For every pair of the configured dataset (HPatches by default; ``export_pairs``: the pose pairs
of ``data.pairs``, see :mod:`datasets.pose_pairs`) the network runs on both images
through :class:`models.frontend.Frontend` (threshold, NMS, border removal, top-k, subpixel from
the ``model:`` section) and one ``predictions/<i>.npz`` is written (format:
:mod:`exporters.predictions`). Weights come from the top-level ``pretrained`` key.

Precision: ``inference.precision`` (auto = fp32, so that keypoint selection does not depend on the
machine); the top-level ``precision`` is training's and is not read here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from exporters.predictions import (
    StagedExport,
    base_record,
    count_pairs,
    iterate_pairs,
    keypoint_fields,
    pair_dataset,
)
from models import load_pretrained
from models.frontend import Frontend, inference_frontend
from training.checkpoints import resolve_pretrained
from utils.cli import UserError, resolve_device
from utils.segmentation_labels import class_ids


def build_frontend(config: dict) -> Frontend:
    """The network with its weights on the configured device, wrapped in the post-processing.
    ``config`` is a merged config (``utils.config.load_config``).

    The network runs on the deployment engine (``inference.engine``, see docs/DEPLOYMENT.md) in
    ``inference.precision`` (auto = fp32, so that exported keypoints do not depend on the machine).
    """
    weights = resolve_pretrained(config)
    device = resolve_device(config["device"])
    model = load_pretrained(config["model"], weights, strict=True, weights_only=bool(config["weights_only"]))
    frontend = inference_frontend(model, config, device)
    frontend.drop_classes = dropped_classes(config)
    return frontend


def dropped_classes(config: dict) -> list[int]:
    """Ids of ``model.segmentation_head.drop_keypoints_on`` (names or ids of the label set)."""
    seg = config["model"]["segmentation_head"]
    wanted = seg["drop_keypoints_on"]
    if not wanted:
        return []
    if not seg["enable"]:
        raise UserError("model.segmentation_head.drop_keypoints_on needs a segmentation head "
                        "(model.segmentation_head.enable: true)")
    return class_ids(config["data"]["segmentation"]["label_set"], wanted)


def segmentation_ids(seg_logits: torch.Tensor, size) -> torch.Tensor:
    """``B x C x h x w`` logits -> ``B x H x W`` int32 class ids at the image size."""
    if tuple(seg_logits.shape[-2:]) != tuple(size):
        seg_logits = F.interpolate(seg_logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return seg_logits.argmax(dim=1).to(torch.int32)


def detect(frontend: Frontend, images: list[torch.Tensor], with_seg: bool) -> list[dict]:
    """Keypoints (N x 2), scores (N), descriptors (N x D) [and seg] for each ``1 x H x W`` image.

    Images of the same size go through the network in one batch.
    """
    groups = [images] if all(im.shape == images[0].shape for im in images) else [[im] for im in images]
    results = []
    for group in groups:
        out = frontend(torch.stack(group).float())
        if with_seg and "seg" not in out.raw:
            raise UserError("--export-segmentation: the model has no segmentation head (its output has no 'seg')")
        kp = out.keypoints
        seg = segmentation_ids(out.raw["seg"], group[0].shape[-2:]) if with_seg else None
        for b in range(len(group)):
            m = kp.mask[b]
            r = {"points": kp.points[b][m], "scores": kp.scores[b][m], "desc": out.descriptors[b][m]}
            if with_seg:
                r["seg"] = seg[b].cpu().numpy()
            results.append(r)
    return results


def pair_record(item: dict, index: int, first: dict, second: dict, label_set: str | None = None) -> dict:
    """The prediction record of one pair from :func:`detect`'s results for its two images (with
    the segmentation maps when ``label_set`` is given)."""
    record = base_record(item, index)
    record.update(keypoint_fields(first["points"], first["scores"], first["desc"]))
    record.update(keypoint_fields(second["points"], second["scores"], second["desc"], prefix="warped_"))
    if label_set is not None:
        record["seg"], record["warped_seg"] = first["seg"], second["seg"]
        record["seg_label_set"] = np.str_(label_set)  # evaluation maps cs34 to cs4 with it
        # ground truth, when the dataset has it, for evaluation.py --evaluate-segmentation
        for key in ("seg", "warped_seg"):
            if key in item:
                record[f"{key}_gt"] = item[key].cpu().numpy().astype(np.int32)
    return record


def run(config: dict, export_dir: Path, args) -> int:
    """``export_descriptor``: every pair of a homography dataset (HPatches); returns 0.

    ``args``: ``outputImg``, ``export_segmentation`` (bools).
    """
    return export(config, export_dir, args, "homography")


def run_pairs(config: dict, export_dir: Path, args) -> int:
    """``export_pairs``: every pair of a pose pair list (``data.dataset: pose_pairs``); returns 0."""
    return export(config, export_dir, args, "pose")


def export(config: dict, export_dir: Path, args, geometry: str) -> int:
    """Both images of every pair through the network -> ``predictions/<i>.npz``."""
    output_images = bool(getattr(args, "outputImg", False))
    with_seg = bool(getattr(args, "export_segmentation", False))
    label_set = config["data"]["segmentation"]["label_set"]
    frontend = build_frontend(config)
    dataset = pair_dataset(config, geometry)
    task = "export_descriptor" if geometry == "homography" else "export_pairs"
    with StagedExport(export_dir, task, config, images=output_images,
                      model=config["model"]["name"], weights=resolve_pretrained(config, task)) as out:
        total = count_pairs(dataset, config["eval_iter"])
        pairs = iterate_pairs(dataset, config["eval_iter"], config["num_workers"])
        for index, item in tqdm(pairs, total=total, desc=task, unit="pair"):
            first, second = detect(frontend, [item["image"], item["warped_image"]], with_seg)
            record = pair_record(item, index, first, second, label_set if with_seg else None)
            out.save(index, record)
            out.preview(index, record)
        predictions_dir = out.commit(total)
    print(f"exported {total} pairs to {predictions_dir}")
    return 0
