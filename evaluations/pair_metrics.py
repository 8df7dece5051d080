"""All metrics of one image pair, under our protocol or the reference one (docs/EVALUATION.md).

``evaluate_pair(pair, settings, repeatability=..., homography=...)`` returns a :class:`PairResult`:
``metrics`` (JSON-ready numbers of this pair) and ``drawing`` (points and matches for pictures).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluations.descriptor import (
    average_precision,
    corner_error,
    correct_within,
    descriptor_distances,
    estimate_homography,
    matching_score,
    nn_average_precision,
    unit_descriptor_distances,
)
from evaluations.predictions import PairPredictions
from evaluations.protocols import EvaluationSettings
from evaluations.repeatability import in_other_image, repeatability as repeatability_of, top_k_indices
from utils.geometry import homography_dlt, inside_image, warp_points
from utils.matching import mutual_nearest_neighbours


@dataclass
class PairResult:
    metrics: dict
    drawing: dict = field(default_factory=dict)


def evaluate_pair(pair: PairPredictions, settings: EvaluationSettings, repeatability: bool = True,
                  homography: bool = True) -> PairResult:
    """Metrics of one pair under ``settings.protocol``."""
    if settings.protocol == "reference":
        return _evaluate_reference(pair, settings, repeatability, homography)
    return _evaluate_ours(pair, settings, repeatability, homography)


def _submatrix(D: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``D[rows][:, cols]``, without a copy when the selection is all of ``D`` in order."""
    full_rows = len(rows) == D.shape[0] and np.array_equal(rows, np.arange(len(rows)))
    full_cols = len(cols) == D.shape[1] and np.array_equal(cols, np.arange(len(cols)))
    if full_rows and full_cols:
        return D
    return D.take(rows, axis=0).take(cols, axis=1)


def _homography_metrics(H: np.ndarray, est, size, s: EvaluationSettings, q1: np.ndarray, q2: np.ndarray) -> dict:
    """Corner error of the RANSAC estimate (and, with the ``dlt`` AUC estimator, of the plain DLT
    on all the matches ``q1 -> q2``, ``corner_error_dlt``)."""
    m = {"homography_ok": est.ok, "corner_error": corner_error(H, est.H, size)}
    if s.homography_estimator == "dlt":
        m["corner_error_dlt"] = corner_error(H, homography_dlt(q1, q2), size)
    return m


# --------------------------------------------------------------------------------------------
# ours
# --------------------------------------------------------------------------------------------
def _evaluate_ours(pair: PairPredictions, s: EvaluationSettings, do_rep: bool, do_homo: bool) -> PairResult:
    H = pair.homography
    H_inv = np.linalg.inv(H)
    P1, P2 = pair.points, pair.warped_points
    n1, n2 = len(P1), len(P2)
    eps = s.correctness_distance
    # the k best points of each image among those whose warp lands inside the other image
    # (kept in file order: no metric depends on the order, and ties of a nearest-neighbour search
    # then go to the lowest file index whatever the scores)
    S1 = np.sort(top_k_indices(pair.scores, n1, s.top_k, in_other_image(P1, H, pair.warped_size)))
    S2 = np.sort(top_k_indices(pair.warped_scores, n2, s.top_k, in_other_image(P2, H_inv, pair.size)))
    m: dict = {"n_points": [n1, n2], "n_shared": [len(S1), len(S2)]}
    drawing: dict = {"all_points1": P1, "all_points2": P2, "points1": P1[S1], "points2": P2[S2]}

    if do_rep:
        r = repeatability_of(warp_points(P1[S1], H), P2[S2], eps)
        m.update(repeatability=r.repeatability, mle=r.mle, n_repeated=[r.repeated1, r.repeated2])

    if do_homo:
        # homography estimation sees the k best points of each image, not the ground-truth region
        # (sorted indices: matching does not depend on the order, and slices stay contiguous)
        A1 = np.sort(top_k_indices(pair.scores, n1, s.top_k))
        A2 = np.sort(top_k_indices(pair.warped_scores, n2, s.top_k))
        # one distance matrix over the union of both selections, sliced for each metric
        U1, U2 = np.union1d(A1, S1).astype(np.int64), np.union1d(A2, S2).astype(np.int64)
        D = descriptor_distances(pair.desc[U1], pair.warped_desc[U2], s.descriptor_metric)
        a1, a2 = np.searchsorted(U1, A1), np.searchsorted(U2, A2)
        s1, s2 = np.searchsorted(U1, S1), np.searchsorted(U2, S2)

        mm = mutual_nearest_neighbours(_submatrix(D, a1, a2), s.match_thresh)
        q1, q2 = P1[A1][mm.idx1], P2[A2][mm.idx2]
        est = estimate_homography(q1, q2, s.ransac_threshold, s.ransac_max_iters, s.ransac_confidence)
        m.update(_homography_metrics(H, est, pair.size, s, q1, q2))
        m.update(n_matches=len(mm), n_inliers=int(est.inliers.sum()))

        DS = _submatrix(D, s1, s2)
        m["nn_ap"] = nn_average_precision(P1[S1], P2[S2], DS, H, eps)
        ms, c = matching_score(P1[S1], P2[S2], mutual_nearest_neighbours(DS, s.match_thresh), H, eps)
        m.update(matching_score=ms, n_correct_matches=c)
        drawing.update(match_points1=q1, match_points2=q2, match_correct=correct_within(q1, q2, H, eps),
                       H_est=est.H)
    return PairResult(m, drawing)


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------
def _reference_unwarped_count(P2: np.ndarray, H_inv: np.ndarray, size) -> int:
    """The reference matching score's count of image-2 points "inside image 1".

    Reproduces the reference exactly: the points are truncated to integers and passed to the
    warp in (row, col) order although it expects (x, y), then kept when the result lies in
    ``[0, W-1] x [0, H-1]``.
    """
    if len(P2) == 0:
        return 0
    swapped = np.trunc(P2[:, ::-1])
    w = warp_points(np.ascontiguousarray(swapped), H_inv)
    return int((inside_image(w, size) & np.isfinite(w).all(axis=1)).sum())


def _evaluate_reference(pair: PairPredictions, s: EvaluationSettings, do_rep: bool, do_homo: bool) -> PairResult:
    H = pair.homography
    H_inv = np.linalg.inv(H)
    P1, P2 = pair.points, pair.warped_points
    n1, n2 = len(P1), len(P2)
    size = pair.size  # the reference bounds both images by the first image's shape
    m: dict = {"n_points": [n1, n2]}
    drawing: dict = {"all_points1": P1, "all_points2": P2, "points1": P1, "points2": P2}

    if do_rep:
        keep1 = in_other_image(P1, H, size, strict_upper=True)
        keep2 = in_other_image(P2, H_inv, size, strict_upper=True)
        # k best by score after the region filter; without scores every point is kept
        S1 = top_k_indices(pair.scores, n1, s.top_k if pair.scores is not None else 0, keep1)
        S2 = top_k_indices(pair.warped_scores, n2, s.top_k if pair.warped_scores is not None else 0, keep2)
        r = repeatability_of(warp_points(P1[S1], H), P2[S2], s.correctness_distance)
        m.update(n_shared=[len(S1), len(S2)], repeatability=r.repeatability, mle=r.mle,
                 n_repeated=[r.repeated1, r.repeated2])
        drawing.update(points1=P1[S1], points2=P2[S2])

    if do_homo:
        # all points, mutual nearest neighbours by L2 (cross-checked brute force), no threshold
        D = descriptor_distances(pair.desc, pair.warped_desc, s.descriptor_metric)
        mm = mutual_nearest_neighbours(D)
        q1, q2 = P1[mm.idx1], P2[mm.idx2]
        est = estimate_homography(q1, q2, s.ransac_threshold, s.ransac_max_iters, s.ransac_confidence)
        m.update(_homography_metrics(H, est, s.reference_image_size, s, q1, q2))
        n_inl = int(est.inliers.sum())
        m.update(n_matches=len(mm), n_inliers=n_inl)
        # matching score: RANSAC inliers over all points of image 1 plus image-2 points "inside"
        denom = n1 + _reference_unwarped_count(P2, H_inv, size)
        m["matching_score"] = 2.0 * n_inl / denom if denom else 0.0
        # NN mAP: mutual-NN matches labelled by RANSAC inliers, ranked by descriptor distance
        if s.sift or s.descriptor_metric == "hamming":
            nm, labels = mm, est.inliers
        else:
            nm = mutual_nearest_neighbours(unit_descriptor_distances(pair.desc, pair.warped_desc),
                                           s.reference_nn_thresh)
            labels = estimate_homography(P1[nm.idx1], P2[nm.idx2], s.ransac_threshold, s.ransac_max_iters,
                                         s.ransac_confidence).inliers
        m["nn_ap"] = average_precision(labels, nm.distance) if labels.any() else 0.0
        drawing.update(match_points1=q1, match_points2=q2, match_correct=est.inliers, H_est=est.H)
    return PairResult(m, drawing)
