"""Detector metrics on one image pair: point selection, repeatability and localisation error (MLE).

All functions are vectorised over points (numpy); warping goes through utils.geometry.warp_points.
Points are float (x, y) pixels; ``H`` maps image 1 into image 2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.geometry import inside_image, warp_points


def order_by_score(scores: np.ndarray | None, n: int) -> np.ndarray:
    """Indices of ``n`` points from best to worst score (stable: ties keep file order).

    Without scores (classical exporters write N x 2), the file order is taken as the ranking.
    """
    if scores is None:
        return np.arange(n)
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def top_k_indices(scores: np.ndarray | None, n: int, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best points (``k = 0``: all) among those where ``mask`` is True, best first."""
    order = order_by_score(scores, n)
    if mask is not None:
        order = order[np.asarray(mask, dtype=bool)[order]]
    return order[:k] if k > 0 else order


def in_other_image(points: np.ndarray, H: np.ndarray, size_other, strict_upper: bool = False) -> np.ndarray:
    """Mask of ``points`` (N x 2) whose warp by ``H`` lands inside an image of ``size_other`` (H, W).

    Inside means ``0 <= x <= W-1`` and ``0 <= y <= H-1`` (pixel centres; utils.geometry.inside_image).
    ``strict_upper`` uses ``0 <= x < W``, ``0 <= y < H`` instead (the reference implementation's bound).
    """
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    warped = warp_points(np.asarray(points, dtype=np.float64), H)
    finite = np.isfinite(warped).all(axis=1)
    if strict_upper:
        h, w = size_other
        x, y = warped[:, 0], warped[:, 1]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    else:
        inside = inside_image(warped, size_other)
    return inside & finite


def nearest_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For point sets ``a`` (N x 2) and ``b`` (M x 2, both non-empty): the distance from each point
    of ``a`` to its nearest point of ``b`` (N) and from each point of ``b`` to ``a`` (M).

    Exact Euclidean distances from k-d trees (scipy), O((N + M) log(N + M)).
    """
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a, k=1)[0], cKDTree(a).query(b, k=1)[0]


@dataclass
class RepeatabilityResult:
    repeatability: float   # (repeated_1 + repeated_2) / (n_1 + n_2); 0 when n_1 + n_2 = 0
    mle: float             # mean distance of the repeated points to their nearest detection; nan if none
    n1: int
    n2: int
    repeated1: int
    repeated2: int


def repeatability(points1_in_2: np.ndarray, points2: np.ndarray, distance: float) -> RepeatabilityResult:
    """Repeatability and localisation error of two point sets already in image 2's frame.

    Args:
        points1_in_2: ``N1 x 2`` points of image 1 warped into image 2 by the true homography.
        points2: ``N2 x 2`` points detected in image 2.
        distance: a point is repeated when the nearest point of the other set is within this (<=).
    A point of either set counts as repeated when the other set has a point within ``distance``;
    the MLE is the mean, over all repeated points of both sets, of that nearest distance.
    """
    n1, n2 = len(points1_in_2), len(points2)
    if n1 == 0 or n2 == 0:
        return RepeatabilityResult(0.0, float("nan"), n1, n2, 0, 0)
    min1, min2 = nearest_distances(np.asarray(points1_in_2, np.float64), np.asarray(points2, np.float64))
    rep1, rep2 = min1 <= distance, min2 <= distance
    c1, c2 = int(rep1.sum()), int(rep2.sum())
    mle = float((min1[rep1].sum() + min2[rep2].sum()) / (c1 + c2)) if c1 + c2 else float("nan")
    return RepeatabilityResult((c1 + c2) / (n1 + n2), mle, n1, n2, c1, c2)
