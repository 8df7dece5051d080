"""Hand-made prediction pairs with known answers, shared by the evaluation tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluations.predictions import PairPredictions
from utils.geometry import inside_image, warp_points

# a mild perspective homography, image 1 -> image 2 (240 x 320)
H_PERSP = np.array([[0.95, 0.04, 8.0], [-0.03, 0.97, 5.0], [2e-5, 1e-5, 1.0]])


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_pair(points1, points2, desc1=None, desc2=None, H=None, size=(240, 320), size2=None,
              scores1=None, scores2=None, name="case") -> PairPredictions:
    p1, p2 = np.asarray(points1, np.float64).reshape(-1, 2), np.asarray(points2, np.float64).reshape(-1, 2)
    size2 = size2 or size
    return PairPredictions(file=Path(f"{name}.npz"), image=np.zeros(size, np.float32),
                           warped_image=np.zeros(size2, np.float32),
                           homography=np.eye(3) if H is None else np.asarray(H, np.float64),
                           points=p1, scores=None if scores1 is None else np.asarray(scores1, np.float64),
                           warped_points=p2, warped_scores=None if scores2 is None else np.asarray(scores2, np.float64),
                           desc=desc1, warped_desc=desc2, name=name)


def perfect_arrays(seed: int, n: int = 60, H=H_PERSP, size=(240, 320), dim: int = 32) -> dict:
    """Arrays of a prediction file where image 2's detections are image 1's, warped exactly.

    All points lie in the shared region, descriptors are identical for corresponding points and
    image 2's points are written in shuffled order: every metric has its best value (repeatability,
    accuracy, NN mAP and matching score 1; MLE and corner error 0).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    pts = []
    while len(pts) < n:  # points of image 1 whose warp lands inside image 2, at least 12 px apart
        p = np.array([rng.integers(4, w - 4), rng.integers(4, h - 4)], np.float64)
        if inside_image(warp_points(p[None], H), size)[0] and all(np.hypot(*(p - q)) >= 12 for q in pts):
            pts.append(p)
    p1 = np.array(pts)
    d1 = unit_rows(rng.normal(size=(n, dim)))
    perm = rng.permutation(n)
    p2, d2 = warp_points(p1, H)[perm], d1[perm]
    s1, s2 = rng.random(n), rng.random(n)
    return {"image": np.full(size, 0.5, np.float32), "warped_image": np.full(size, 0.5, np.float32),
            "homography": np.asarray(H, np.float64),
            "prob": np.c_[p1, s1].astype(np.float32), "warped_prob": np.c_[p2, s2].astype(np.float32),
            "desc": d1, "warped_desc": d2, "name": np.array(f"perfect_{seed}"), "index": np.array(seed)}
