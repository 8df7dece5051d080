"""The prediction files shared by every descriptor export (read by ``evaluation.py``).

``<export_dir>/predictions/<i>.npz`` for pair i = 0, 1, ... in the dataset's order, holding:

==================  ==========================  ==============================================
key                 shape / dtype               meaning
==================  ==========================  ==============================================
image               H x W float32 in [0, 1]     first image, at the evaluated size
warped_image        H' x W' float32 in [0, 1]   second image
homography          3 x 3 float64               maps image pixels to warped_image pixels
prob, warped_prob   N x 3 float32               keypoints (x, y, score), strongest first
desc, warped_desc   N x D float32               one descriptor per keypoint row
name                0-d str                     sequence / image name
pair_index          0-d int64                   k of the pair (1, k); -1 if the dataset has none
==================  ==========================  ==============================================

Pose pairs (``export_pairs``, dataset ``pose_pairs``) have no ``homography``; they hold instead
``K`` / ``warped_K`` (3 x 3 float64 intrinsics of each image at its evaluated size) and ``T_0to1``
(4 x 4 float64, camera of ``image`` -> camera of ``warped_image``).

Optional: ``seg`` / ``warped_seg`` (H x W int32 class ids, ``--export-segmentation``, with
``seg_gt`` / ``warped_seg_gt`` when the dataset has labels and ``seg_label_set``, 0-d str cs34 | cs4) and
``matches`` / ``match_indices`` / ``match_distance`` (``export_classical.py --correspondence``).
Points follow the project's convention: (x, y), the centre of the top-left pixel at (0, 0).

An export is all or nothing (:class:`StagedExport`): files go to ``<export_dir>/.staging/`` and
replace ``predictions/`` (and ``images/``) only once every pair is written, with
``<export_dir>/manifest.json`` (:data:`MANIFEST`: task, config hash, model, weights, expected and
completed counts, the SHA-256 of every file), which ``evaluation.py`` checks. A failed or killed
re-export leaves the previous complete export in place.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets import get_dataset
from utils.cli import UserError
from utils.draw import GREEN, RED, draw_keypoints, save_rgb, side_by_side
from utils.io import EXPORT_MANIFEST, atomic_save_npz, atomic_write_text, file_sha256

PREDICTIONS = "predictions"
IMAGES = "images"
MANIFEST = EXPORT_MANIFEST
STAGING = ".staging"
MANIFEST_VERSION = 1


def config_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def recover_interrupted_swap(export_dir: Path) -> None:
    """Undo the one state a kill can leave between the renames of :meth:`StagedExport.commit`:
    ``predictions/`` moved aside and the new one not yet in place."""
    for name in (PREDICTIONS, IMAGES):
        old = Path(export_dir) / STAGING / f"old_{name}"
        if old.is_dir() and not (Path(export_dir) / name).exists():
            os.replace(old, Path(export_dir) / name)


class StagedExport:
    """The prediction files of one export, moved into place only when all are written.

    ``save(index, record)`` / ``preview(index, record)`` write into ``<export_dir>/.staging/``;
    ``commit(expected)`` checks the count, swaps the staged folders in for ``predictions/`` (and
    ``images/``) and writes the manifest. Used as a context manager, an error removes the staged
    files (a kill leaves them to the next export). The caller holds the export folder's lock.
    """

    def __init__(self, export_dir: Path, task: str, config: dict, images: bool = False,
                 model: str | None = None, weights: Path | None = None):
        self.export_dir = Path(export_dir)
        self.task, self.config, self.images = task, config, images
        self.model, self.weights = model, weights
        recover_interrupted_swap(self.export_dir)
        self.staging = self.export_dir / STAGING
        shutil.rmtree(self.staging, ignore_errors=True)  # what a killed export left
        self.predictions_dir = self.staging / PREDICTIONS
        self.images_dir = self.staging / IMAGES if images else None
        for d in (self.predictions_dir, self.images_dir):
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, str] = {}

    def __enter__(self) -> "StagedExport":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def save(self, index: int, record: dict) -> Path:
        path = save_prediction(self.predictions_dir, index, record)
        self.files[path.name] = file_sha256(path)
        return path

    def preview(self, index: int, record: dict) -> Path | None:
        return save_preview(self.images_dir, index, record) if self.images_dir is not None else None

    def commit(self, expected: int) -> Path:
        """Swap the complete export in; returns the final ``predictions/`` folder."""
        if len(self.files) != expected:
            raise RuntimeError(f"{self.staging}: {len(self.files)} of {expected} pairs written; "
                               f"the previous export is left in place")
        manifest = {
            "version": MANIFEST_VERSION, "task": self.task, "predictions": PREDICTIONS,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "config_sha256": config_sha256(self.config), "model": self.model,
            "weights": None if self.weights is None else str(self.weights),
            "weights_sha256": None if self.weights is None else file_sha256(Path(self.weights)),
            "expected": int(expected), "completed": len(self.files),
            "files": dict(sorted(self.files.items(), key=lambda kv: int(kv[0].split(".")[0]))),
        }
        final_manifest = self.export_dir / MANIFEST
        # no window with a manifest that does not describe predictions/: drop it, swap, write the new one
        final_manifest.unlink(missing_ok=True)
        for name, staged in ((PREDICTIONS, self.predictions_dir), (IMAGES, self.images_dir)):
            if staged is None:
                continue
            final, old = self.export_dir / name, self.staging / f"old_{name}"
            if final.exists():
                os.replace(final, old)
            os.replace(staged, final)
        atomic_write_text(final_manifest, json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(self.staging, ignore_errors=True)
        return self.export_dir / PREDICTIONS


# what each kind of export needs in the dataset's items, and how to get it
PAIR_GEOMETRY = {
    "homography": (("homography",), "descriptor exports need image pairs with a homography (HPatches, or "
                                     "data.warped_pair.enable: true); pose pairs go through export_pairs"),
    "pose": (("K", "warped_K", "T_0to1"), "export_pairs needs image pairs with intrinsics and a relative pose: "
                                          "set data.dataset: pose_pairs with data.pairs and data.root"),
}


def pair_dataset(config: dict, geometry: str = "homography"):
    """The configured dataset, checked to give image pairs with ``geometry`` (homography | pose)."""
    # HPatches ignores the split; single-image datasets export `data.export_folder`
    dataset = get_dataset(config, str(config["data"]["export_folder"]), pairs=True)
    if len(dataset) == 0:
        raise UserError(f"data.dataset '{config['data']['dataset']}': the dataset is empty")
    first = dataset[0]
    keys, hint = PAIR_GEOMETRY[geometry]
    missing = [k for k in ("image", "warped_image") + keys if k not in first]
    if missing:
        raise UserError(f"data.dataset '{config['data']['dataset']}': items have no {', '.join(missing)}; {hint}")
    return dataset


def iterate_pairs(dataset, eval_iter: int = -1, num_workers: int = 0) -> Iterator[tuple[int, dict]]:
    """``(index, item)`` for the first ``eval_iter`` items (all if negative), in order."""
    total = len(dataset) if eval_iter is None or eval_iter < 0 else min(int(eval_iter), len(dataset))
    if total == 0:
        return
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=int(num_workers))
    for index, item in enumerate(loader):
        yield index, item
        if index + 1 >= total:
            break


def count_pairs(dataset, eval_iter: int = -1) -> int:
    return len(dataset) if eval_iter is None or eval_iter < 0 else min(int(eval_iter), len(dataset))


def _numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def base_record(item: dict, index: int) -> dict:
    """The image / geometry (homography, or intrinsics and pose) / name fields of one prediction file."""
    pair_index = item.get("pair_index", -1)
    if isinstance(pair_index, torch.Tensor):
        pair_index = int(pair_index)
    record = {
        "image": _numpy(item["image"], np.float32).reshape(item["image"].shape[-2:]),
        "warped_image": _numpy(item["warped_image"], np.float32).reshape(item["warped_image"].shape[-2:]),
        "name": np.str_(item.get("name", str(index))),
        "pair_index": np.int64(pair_index),
    }
    for key, shape in (("homography", (3, 3)), ("K", (3, 3)), ("warped_K", (3, 3)), ("T_0to1", (4, 4))):
        if key in item:
            record[key] = _numpy(item[key], np.float64).reshape(shape)
    return record


def keypoint_fields(points, scores, desc, prefix: str = "") -> dict:
    """``prob`` (N x 3 x, y, score) and ``desc`` (N x D) as float32 arrays, keys prefixed."""
    pts = _numpy(points, np.float32).reshape(-1, 2)
    sc = _numpy(scores, np.float32).reshape(-1, 1)
    d = _numpy(desc, np.float32)
    d = d.reshape(len(pts), d.shape[-1])  # desc: N x D
    return {f"{prefix}prob": np.concatenate([pts, sc], axis=1), f"{prefix}desc": d}


def save_prediction(predictions_dir: Path, index: int, record: dict) -> Path:
    path = Path(predictions_dir) / f"{index}.npz"
    atomic_save_npz(path, compressed=True, **record)
    return path


def save_preview(images_dir: Path, index: int, record: dict) -> Path:
    """``images/<index>.png``: both images side by side with their keypoints."""
    left = draw_keypoints(record["image"], record["prob"], color=GREEN)
    right = draw_keypoints(record["warped_image"], record["warped_prob"], color=RED)
    path = Path(images_dir) / f"{index}.png"
    save_rgb(path, side_by_side([left, right]))
    return path
