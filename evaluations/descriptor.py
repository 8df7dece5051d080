"""Descriptor metrics on one image pair: matching, homography estimation, NN mAP, matching score.

Vectorised over points (numpy; the distance matrices are one BLAS product). Points are float
(x, y) pixels; ``H`` maps image 1 into image 2 (utils.geometry convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.geometry import warp_points
from utils.matching import Matches


# --------------------------------------------------------------------------------------------
# descriptor distances and matching
# --------------------------------------------------------------------------------------------
def descriptor_distances(desc1: np.ndarray, desc2: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Distance matrix between descriptor sets.

    Args:
        desc1: ``N x D``, desc2: ``M x D`` (float or uint8; cast to float32).
        metric: ``l2`` = Euclidean distance of the raw vectors (no normalisation, so SIFT values
            in 0..255 work as they are); ``hamming`` = number of differing bits of packed binary
            descriptors (uint8, e.g. ORB's 32 bytes = 256 bits).
    Returns ``N x M`` float32.
    """
    if len(desc1) == 0 or len(desc2) == 0:
        return np.zeros((len(desc1), len(desc2)), dtype=np.float32)
    if metric == "hamming":
        if desc1.dtype != np.uint8 or desc2.dtype != np.uint8:
            raise ValueError(f"hamming distance needs packed uint8 descriptors, got {desc1.dtype} and {desc2.dtype}")
        a = np.unpackbits(desc1, axis=1).astype(np.float32)
        b = np.unpackbits(desc2, axis=1).astype(np.float32)
        return a.sum(1)[:, None] + b.sum(1)[None, :] - 2.0 * _matmul_t(a, b)
    if metric != "l2":
        raise ValueError(f"unknown descriptor metric {metric!r} (expected l2 or hamming)")
    import torch

    # |a|^2 + |b|^2 - 2 a.b in one fused product, then in place: a few passes over N x M only
    a = torch.from_numpy(np.ascontiguousarray(desc1, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(desc2, dtype=np.float32))
    norms = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
    return torch.addmm(norms, a, b.T, alpha=-2.0).clamp_min_(0.0).sqrt_().numpy()


def _matmul_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` through torch, so that its thread setting applies (see hpatches_report)."""
    import torch

    return (torch.from_numpy(a) @ torch.from_numpy(b).T).numpy()


def unit_descriptor_distances(desc1: np.ndarray, desc2: np.ndarray) -> np.ndarray:
    """``sqrt(2 - 2 clip(d1 . d2, -1, 1))``: the L2 distance if the descriptors are unit vectors.

    This is what the reference implementation's NN mAP matcher computes (it assumes unit norm).
    """
    if len(desc1) == 0 or len(desc2) == 0:
        return np.zeros((len(desc1), len(desc2)), dtype=np.float32)
    dot = _matmul_t(np.ascontiguousarray(desc1, dtype=np.float32), np.ascontiguousarray(desc2, dtype=np.float32))
    return np.sqrt(2.0 - 2.0 * np.clip(dot, -1.0, 1.0))


# --------------------------------------------------------------------------------------------
# homography estimation
# --------------------------------------------------------------------------------------------
@dataclass
class HomographyEstimate:
    H: np.ndarray | None      # 3 x 3 estimate, None when the estimation failed
    inliers: np.ndarray       # L bool, RANSAC inliers among the matches given (all False on failure)

    @property
    def ok(self) -> bool:
        return self.H is not None


def estimate_homography(points1: np.ndarray, points2: np.ndarray, threshold: float = 3.0,
                        max_iters: int = 2000, confidence: float = 0.995) -> HomographyEstimate:
    """RANSAC homography from matched points (``L x 2`` each) with OpenCV.

    Fewer than 4 matches, an OpenCV failure, or a singular / non-finite result is a failure
    (``H = None``), which callers count as an incorrect estimate.
    """
    import cv2

    n = len(points1)
    no = HomographyEstimate(None, np.zeros(n, dtype=bool))
    if n < 4:
        return no
    try:
        H, mask = cv2.findHomography(np.asarray(points1, np.float64).reshape(-1, 1, 2),
                                     np.asarray(points2, np.float64).reshape(-1, 1, 2),
                                     cv2.RANSAC, float(threshold), maxIters=int(max_iters),
                                     confidence=float(confidence))
    except cv2.error:
        return no
    # OpenCV's inlier mask is kept even when its model is rejected below (the reference protocol
    # counts those inliers; a failed estimate still counts as incorrect)
    inliers = mask.reshape(-1).astype(bool) if mask is not None and mask.size == n else no.inliers
    if H is None or H.shape != (3, 3) or not np.isfinite(H).all() or not np.linalg.cond(H) < 1e12:
        return HomographyEstimate(None, inliers)
    return HomographyEstimate(H.astype(np.float64), inliers)


def image_corners(size) -> np.ndarray:
    """The four corner pixel centres of an image of ``size`` (H, W): ``4 x 2`` (x, y)."""
    h, w = size
    return np.array([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]])


def corner_error(H_true: np.ndarray, H_est: np.ndarray | None, size) -> float:
    """Mean distance between the corners of an image of ``size`` warped by the true and the
    estimated homography; ``inf`` for a failed estimate (or corners sent to infinity)."""
    if H_est is None:
        return float("inf")
    c = image_corners(size)
    err = np.linalg.norm(warp_points(c, H_true) - warp_points(c, H_est), axis=1).mean()
    return float(err) if np.isfinite(err) else float("inf")


def homography_accuracy(errors, thresholds) -> dict[float, float]:
    """Share of pairs whose corner error is ``<= eps`` for each ``eps`` (failures are ``inf``)."""
    e = np.asarray(errors, dtype=np.float64)
    return {float(t): (float((e <= t).mean()) if len(e) else float("nan")) for t in thresholds}


# --------------------------------------------------------------------------------------------
# ranking metrics
# --------------------------------------------------------------------------------------------
def average_precision(labels: np.ndarray, distances: np.ndarray) -> float:
    """Average precision of ``labels`` (bool) ranked by ``distances`` ascending (best first).

    AP = sum over distinct thresholds t of (R_t - R_{t-1}) * P_t, where P_t / R_t are the precision
    / recall of "every item with distance <= t" (tied distances enter together): the step-wise
    area under the precision-recall curve, without interpolation. 0 when there is no positive.
    """
    labels = np.asarray(labels, dtype=bool)
    d = np.asarray(distances, dtype=np.float64)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(d, kind="stable")
    d, labels = d[order], labels[order]
    tp = np.cumsum(labels)
    last = np.r_[np.nonzero(np.diff(d))[0], len(d) - 1]  # last index of each group of tied distances
    tp, n = tp[last], last + 1
    precision = tp / n
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def correct_within(points1: np.ndarray, points2: np.ndarray, H: np.ndarray, distance: float) -> np.ndarray:
    """Mask of pairs (points1[i], points2[i]) with ``|H points1[i] - points2[i]| <= distance``."""
    if len(points1) == 0:
        return np.zeros(0, dtype=bool)
    err = np.linalg.norm(warp_points(np.asarray(points1, np.float64), H) - points2, axis=1)
    return np.isfinite(err) & (err <= distance)


def nn_average_precision(points1: np.ndarray, points2: np.ndarray, dist: np.ndarray, H: np.ndarray,
                         distance: float) -> float:
    """NN mAP of one pair (our definition).

    Every point i of set 1 is matched to its nearest neighbour j(i) in set 2 by descriptor
    distance ``dist[i, j]`` (``N x M``); the match is correct when ``|H p_i - q_j(i)| <= distance``.
    Returns the average precision of that list ranked by descriptor distance (0 if N or M is 0).
    """
    n, m = dist.shape
    if n == 0 or m == 0:
        return 0.0
    nn = dist.argmin(axis=1)
    labels = correct_within(points1, points2[nn], H, distance)
    return average_precision(labels, dist[np.arange(n), nn])


def matching_score(points1: np.ndarray, points2: np.ndarray, matches: Matches, H: np.ndarray,
                   distance: float) -> tuple[float, int]:
    """Matching score of one pair (our definition) and the number of correct matches.

    ``points1`` / ``points2`` are the points of each image inside the shared region (their warp
    lands inside the other image) and ``matches`` their mutual nearest neighbours. With c the
    number of matches with ``|H p_i - q_j| <= distance``: MS = (c / N1 + c / N2) / 2, a term
    being 0 when its N is 0.
    """
    c = int(correct_within(points1[matches.idx1], points2[matches.idx2], H, distance).sum())
    n1, n2 = len(points1), len(points2)
    ms = 0.5 * ((c / n1 if n1 else 0.0) + (c / n2 if n2 else 0.0))
    return ms, c
