"""Detector metrics on hand-made point sets: selection, shared region, repeatability, MLE."""
import numpy as np
import pytest

from evaluations.repeatability import in_other_image, repeatability, top_k_indices
from utils.geometry import warp_points

SHIFT = np.array([[1.0, 0, 5], [0, 1, 3], [0, 0, 1]])  # image 1 -> image 2: (+5, +3)
P1 = np.array([[10.0, 10.0], [20.0, 30.0], [40.0, 15.0], [50.0, 50.0]])  # far apart (> 10 px)


def test_perfect_detector_repeatability_one_mle_zero():
    r = repeatability(warp_points(P1, SHIFT), warp_points(P1, SHIFT), 3.0)
    assert r.repeatability == 1.0 and r.mle == 0.0
    assert (r.n1, r.n2, r.repeated1, r.repeated2) == (4, 4, 4, 4)


def test_points_shifted_by_one_pixel_give_mle_one():
    p2 = warp_points(P1, SHIFT) + np.array([1.0, 0.0])
    r = repeatability(warp_points(P1, SHIFT), p2, 3.0)
    assert r.repeatability == 1.0
    assert r.mle == pytest.approx(1.0, abs=1e-12)
    # diagonal shift of (3, 4) = 5 px: beyond 3 px, nothing is repeated and the MLE is undefined
    r = repeatability(warp_points(P1, SHIFT), warp_points(P1, SHIFT) + np.array([3.0, 4.0]), 3.0)
    assert r.repeatability == 0.0 and np.isnan(r.mle)


def test_three_of_four_repeated():
    p2 = warp_points(P1, SHIFT).copy()
    p2[3] = [200.0, 200.0]  # the fourth detection is elsewhere
    r = repeatability(warp_points(P1, SHIFT), p2, 3.0)
    assert (r.repeated1, r.repeated2) == (3, 3)
    assert r.repeatability == pytest.approx(6 / 8)


def test_repeatability_counts_each_image_separately():
    # one point in image 1, two detections of image 2 next to it (0 and 2 px away):
    # image 1: 1 of 1 repeated, image 2: 2 of 2 -> (1 + 2) / (1 + 2); MLE = (0 + 0 + 2) / 3
    p1 = np.array([[10.0, 10.0]])
    p2 = np.array([[15.0, 13.0], [17.0, 13.0]])
    r = repeatability(warp_points(p1, SHIFT), p2, 3.0)
    assert r.repeatability == 1.0
    assert r.mle == pytest.approx(2 / 3)


def test_threshold_is_inclusive_and_empty_sets_give_zero():
    p2 = warp_points(P1[:1], SHIFT) + np.array([3.0, 0.0])  # exactly 3 px
    assert repeatability(warp_points(P1[:1], SHIFT), p2, 3.0).repeatability == 1.0
    r = repeatability(np.zeros((0, 2)), p2, 3.0)
    assert r.repeatability == 0.0 and np.isnan(r.mle)


def test_top_k_by_score_in_any_order_ties_keep_file_order():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.7])
    assert top_k_indices(scores, 5, 2).tolist() == [1, 3]
    assert top_k_indices(scores, 5, 0).tolist() == [1, 3, 4, 2, 0]
    mask = np.array([True, False, True, True, True])
    assert top_k_indices(scores, 5, 2, mask).tolist() == [3, 4]
    # no scores (classical exporters write N x 2): file order is the ranking
    assert top_k_indices(None, 5, 3).tolist() == [0, 1, 2]


def test_shared_region_pixel_centre_bounds():
    size = (10, 20)  # H, W: pixel centres x in 0..19, y in 0..9
    pts = np.array([[19.0, 9.0], [19.5, 0.0], [-0.1, 0.0], [0.0, 0.0], [5.0, 9.6]])
    ident = np.eye(3)
    assert in_other_image(pts, ident, size).tolist() == [True, False, False, True, False]
    # the reference implementation's bound is [0, W) x [0, H)
    assert in_other_image(pts, ident, size, strict_upper=True).tolist() == [True, True, False, True, True]
    # after a warp: (+5, +3) pushes x = 15 out of a 20-wide image
    assert in_other_image(np.array([[14.0, 0.0], [15.0, 0.0]]), SHIFT, size).tolist() == [True, False]
