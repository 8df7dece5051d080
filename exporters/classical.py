"""``export_classical.py export_descriptor`` / ``export_pairs``: SIFT or ORB (OpenCV) on the same image pairs.

Writes the same ``predictions/<i>.npz`` as the network export (:mod:`exporters.predictions`):
``prob`` rows are (x, y, keypoint response), strongest first; ``desc`` is float32 -- SIFT's 128
values (L2-normalised with ``classical.normalize``), ORB's 256 bits as 0/1 (so that the squared
L2 distance between two rows is their Hamming distance). OpenCV may return the same position
twice with different orientations (and so different descriptors); both rows are kept.

With ``--correspondence`` each file also gets the mutual nearest-neighbour matches of the two
descriptor sets (:func:`utils.matching.mutual_nearest_neighbours`; L2 for SIFT, Hamming for ORB),
sorted by distance:
``matches`` (M x 4 float32: x, y in image, x, y in warped_image), ``match_indices`` (M x 2
int64 rows of prob / warped_prob) and ``match_distance`` (M float32).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from evaluations.descriptor import descriptor_distances
from exporters.predictions import (
    StagedExport,
    base_record,
    count_pairs,
    iterate_pairs,
    keypoint_fields,
    pair_dataset,
)
from utils.cli import UserError
from utils.matching import mutual_nearest_neighbours

METHODS = ("sift", "orb")
ALL_KEYPOINTS = 1_000_000  # OpenCV's ORB needs a positive budget; "all" in practice


class ClassicalFeatures:
    """Detect and describe with OpenCV; ``__call__(gray uint8 H x W)`` -> (points, scores, desc, raw).

    ``points`` N x 2 float32 (x, y), ``scores`` N float32 (responses), ``desc`` N x D float32 as
    stored, ``raw`` the descriptors in OpenCV's own type (for matching). Sorted by response.
    ``cfg`` is the ``classical`` section of a merged config (configs/defaults/classical.yaml).
    """

    def __init__(self, cfg: dict):
        method = cfg["method"]
        if method not in METHODS:
            raise UserError(f"classical.method: expected one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.top_k = int(cfg["top_k"])
        self.normalize = bool(cfg["normalize"])
        if method == "sift":
            p = cfg["sift"]
            self.detector = cv2.SIFT_create(nfeatures=max(self.top_k, 0),
                                            nOctaveLayers=int(p["n_octave_layers"]),
                                            contrastThreshold=float(p["contrast_threshold"]),
                                            edgeThreshold=float(p["edge_threshold"]),
                                            sigma=float(p["sigma"]))
            self.metric = "l2"
        else:
            p = cfg["orb"]
            self.detector = cv2.ORB_create(nfeatures=self.top_k if self.top_k > 0 else ALL_KEYPOINTS,
                                           scaleFactor=float(p["scale_factor"]),
                                           nlevels=int(p["n_levels"]),
                                           edgeThreshold=int(p["edge_threshold"]),
                                           fastThreshold=int(p["fast_threshold"]))
            self.metric = "hamming"

    def __call__(self, image: np.ndarray):
        keypoints, raw = self.detector.detectAndCompute(image, None)
        if raw is None or len(keypoints) == 0:
            raw = np.zeros((0, 128 if self.method == "sift" else 32), np.float32 if self.method == "sift" else np.uint8)
            keypoints = []
        points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
        scores = np.array([k.response for k in keypoints], np.float32)
        order = np.argsort(-scores, kind="stable")
        if self.top_k > 0:
            order = order[:self.top_k]
        points, scores, raw = points[order], scores[order], raw[order]
        if self.method == "sift":
            desc = raw.astype(np.float32)
            if self.normalize and len(desc):
                desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
                raw = desc
        else:
            desc = np.unpackbits(raw, axis=1).astype(np.float32)
        return points, scores, desc, raw


def mutual_matches(raw0: np.ndarray, raw1: np.ndarray, metric: str):
    """Mutual nearest neighbours -> (M x 2 int64 indices, M float32 distances), by distance."""
    found = mutual_nearest_neighbours(descriptor_distances(raw0, raw1, metric))
    dist = found.distance
    if metric == "l2":
        # the matrix product loses ~1e-5 on unit vectors; the matched rows' distances, directly
        diff = raw0[found.idx1].astype(np.float64) - raw1[found.idx2].astype(np.float64)
        dist = np.sqrt((diff * diff).sum(axis=1))
    dist = dist.astype(np.float32)
    order = np.argsort(dist, kind="stable")
    idx = np.stack([found.idx1, found.idx2], axis=1).astype(np.int64).reshape(-1, 2)
    return idx[order], dist[order]


def to_uint8(image) -> np.ndarray:
    """``1 x H x W`` (or H x W) float in [0, 1] -> H x W uint8."""
    arr = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    arr = arr.reshape(arr.shape[-2:])
    return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)


def run(config: dict, export_dir: Path, args) -> int:
    """``export_descriptor``: every pair of a homography dataset (HPatches).

    ``args``: ``correspondence`` and ``outputImg`` (bools).
    """
    return export(config, export_dir, args, "homography")


def run_pairs(config: dict, export_dir: Path, args) -> int:
    """``export_pairs``: every pair of a pose pair list (``data.dataset: pose_pairs``)."""
    return export(config, export_dir, args, "pose")


def export(config: dict, export_dir: Path, args, geometry: str) -> int:
    features = ClassicalFeatures(config["classical"])
    with_matches = bool(getattr(args, "correspondence", False))
    output_images = bool(getattr(args, "outputImg", False))
    dataset = pair_dataset(config, geometry)
    task = "export_classical" if geometry == "homography" else "export_classical export_pairs"
    with StagedExport(export_dir, f"{task} ({features.method})", config, images=output_images,
                      model=features.method) as out:
        total = count_pairs(dataset, config["eval_iter"])
        pairs = iterate_pairs(dataset, config["eval_iter"], config["num_workers"])
        for index, item in tqdm(pairs, total=total, desc=f"export {features.method}", unit="pair"):
            p0, s0, d0, raw0 = features(to_uint8(item["image"]))
            p1, s1, d1, raw1 = features(to_uint8(item["warped_image"]))
            record = base_record(item, index)
            record.update(keypoint_fields(p0, s0, d0))
            record.update(keypoint_fields(p1, s1, d1, prefix="warped_"))
            if with_matches:
                idx, dist = mutual_matches(raw0, raw1, features.metric)
                record["matches"] = np.concatenate([p0[idx[:, 0]], p1[idx[:, 1]]], axis=1).astype(np.float32)
                record["match_indices"] = idx
                record["match_distance"] = dist
            out.save(index, record)
            out.preview(index, record)
        predictions_dir = out.commit(total)
    print(f"exported {total} pairs ({features.method}) to {predictions_dir}")
    return 0
