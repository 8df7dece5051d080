"""Detector precision, recall and mAP against ground-truth keypoints (Synthetic Shapes).

A detection is correct when it lies within ``distance`` pixels (2 by default) of a ground-truth
point not already taken by a higher-scoring detection of the same image. Precision and recall
are pooled over all images; the precision-recall curve is traced by lowering the score
threshold over all detections of all images, and mAP (average precision) is
``sum_i P_i (R_i - R_{i-1})`` over that ranking (R_0 = 0), without interpolation.

Where the detections above the threshold lie is also profiled by their distance to the nearest
ground-truth point (:data:`OFFSET_BANDS`): a detector that fires a ring of secondary peaks a few
pixels beside each corner shows it as a large "beside" share, which mAP alone does not tell apart
from detections on the background.
"""
from __future__ import annotations

import numpy as np

# distance bands (px) to the nearest ground-truth point: on a point, beside one, away from all
OFFSET_BANDS = {"on": (0.0, 2.0), "beside": (2.0, 6.0), "away": (6.0, np.inf)}


def match_detections(points: np.ndarray, scores: np.ndarray, gt: np.ndarray, distance: float = 2.0) -> np.ndarray:
    """Greedy one-to-one matching by decreasing score.

    Args:
        points: ``P x 2`` detections (x, y); scores: ``P``; gt: ``G x 2``.
    Returns:
        ``P`` bool, True for correct detections (in the input order).
    """
    P = len(points)
    correct = np.zeros(P, bool)
    if P == 0 or len(gt) == 0:
        return correct
    d = np.linalg.norm(points[:, None, :].astype(np.float64) - gt[None, :, :], axis=-1)  # P G
    close = d <= distance
    candidates = np.flatnonzero(close.any(axis=1))
    if len(candidates) == 0:
        return correct
    # only detections near some ground truth compete for it; visit them by score (stable)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    taken = np.zeros(len(gt), bool)
    for i in order:
        free = close[i] & ~taken
        if free.any():
            j = np.flatnonzero(free)[np.argmin(d[i, free])]
            taken[j] = True
            correct[i] = True
    return correct


def average_precision(scores: np.ndarray, correct: np.ndarray, num_gt: int) -> float:
    """Area under the (non-interpolated) precision-recall curve of a pooled ranking."""
    if num_gt == 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(correct[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / num_gt
    return float(np.sum(precision * np.diff(np.concatenate([[0.0], recall]))))


class DetectionAccumulator:
    """Collects detections image by image; reports precision / recall / mAP."""

    def __init__(self, distance: float = 2.0):
        self.distance = distance
        self.scores: list[np.ndarray] = []
        self.correct: list[np.ndarray] = []
        self.nearest: list[np.ndarray] = []  # distance of each detection to its nearest ground truth
        self.num_gt = 0
        self.num_images = 0

    def add(self, points, scores, gt) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 2)
        scores = np.asarray(scores, np.float64).reshape(-1)
        gt = np.asarray(gt, np.float64).reshape(-1, 2)
        self.scores.append(scores)
        self.correct.append(match_detections(points, scores, gt, self.distance))
        self.nearest.append(np.linalg.norm(points[:, None] - gt[None], axis=-1).min(axis=1) if len(gt)
                            else np.full(len(points), np.inf))
        self.num_gt += len(gt)
        self.num_images += 1

    def result(self, threshold: float = 0.0) -> dict:
        """Precision and recall of detections with score >= ``threshold``; mAP over all.

        Also ``detections_per_gt`` (kept detections per ground-truth point) and ``offset_shares``:
        the fraction of kept detections in each band of :data:`OFFSET_BANDS` (lower bound
        exclusive but for "on"; detections of images without ground truth are "away").
        """
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        correct = np.concatenate(self.correct) if self.correct else np.zeros(0, bool)
        nearest = np.concatenate(self.nearest) if self.nearest else np.zeros(0)
        keep = scores >= threshold
        n_det = int(keep.sum())
        tp = int(correct[keep].sum())
        kept = nearest[keep]
        shares = {name: float(np.mean((kept > lo if lo > 0 else kept >= lo) & (kept <= hi))) if n_det else 0.0
                  for name, (lo, hi) in OFFSET_BANDS.items()}
        return {
            "precision": tp / n_det if n_det else 0.0,
            "recall": tp / self.num_gt if self.num_gt else 0.0,
            "mAP": average_precision(scores, correct, self.num_gt),
            "num_detections": n_det,
            "num_ground_truth": self.num_gt,
            "num_images": self.num_images,
            "detections_per_gt": n_det / self.num_gt if self.num_gt else float("nan"),
            "offset_shares": shares,
        }
