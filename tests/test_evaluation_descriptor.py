"""Descriptor metrics on hand-made cases: distances, matching, homography accuracy, NN mAP, MS."""
import numpy as np
import pytest
from evaluation_cases import H_PERSP, make_pair, perfect_arrays, unit_rows

from evaluations.descriptor import (
    Matches,
    average_precision,
    corner_error,
    descriptor_distances,
    estimate_homography,
    homography_accuracy,
    matching_score,
    nn_average_precision,
)
from evaluations.pair_metrics import evaluate_pair
from evaluations.protocols import load_settings
from utils.geometry import warp_points
from utils.matching import mutual_nearest_neighbours

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


def test_l2_and_hamming_distances_by_hand():
    d = descriptor_distances(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0], [3.0, 0.0]]))
    assert d.tolist() == [[5.0, 4.0]]
    # uint8 SIFT-like values are used as they are (no normalisation)
    d = descriptor_distances(np.array([[10, 0]], np.uint8), np.array([[13, 4]], np.uint8))
    assert d[0, 0] == pytest.approx(5.0)
    a = np.array([[0b11110000]], np.uint8)
    b = np.array([[0b00000000], [0b11110001]], np.uint8)
    assert descriptor_distances(a, b, "hamming").tolist() == [[4.0, 1.0]]
    with pytest.raises(ValueError, match="uint8"):
        descriptor_distances(a.astype(np.float32), b.astype(np.float32), "hamming")


def test_mutual_nearest_neighbours_by_hand():
    dist = np.array([[1.0, 5.0], [2.0, 3.0], [0.5, 9.0]])
    # row NNs: 0, 0, 0 ; column NNs: 2, 1 -> only (2, 0) is mutual
    m = mutual_nearest_neighbours(dist)
    assert m.idx1.tolist() == [2] and m.idx2.tolist() == [0] and m.distance.tolist() == [0.5]
    assert len(mutual_nearest_neighbours(dist, max_distance=0.4)) == 0
    assert len(mutual_nearest_neighbours(np.zeros((0, 3)))) == 0


def test_average_precision_by_hand():
    # ranks 1..4 labelled 1 0 1 0: AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(5 / 6)
    # the ranking is by distance, whatever order the items come in
    assert average_precision([0, 1, 0, 1], [0.4, 0.1, 0.2, 0.3]) == pytest.approx(5 / 6)
    # tied distances enter together: {0.1, 0.1} gives P = 1/2 at R = 1/2, then P = 2/3 at R = 1
    assert average_precision([0, 1, 1], [0.1, 0.1, 0.3]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0, 0], [0.1, 0.2]) == 0.0


def test_average_precision_of_a_random_ranking_is_the_positive_rate():
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.3
    assert average_precision(labels, rng.random(20000)) == pytest.approx(labels.mean(), abs=0.02)


def test_nn_map_perfect_and_shuffled_descriptors_near_chance():
    # 100 points on a 2 px grid: several neighbours lie within 3 px, so chance is well above 0
    g = np.stack(np.meshgrid(np.arange(10) * 2.0 + 20, np.arange(10) * 2.0 + 20), -1).reshape(-1, 2)
    H = np.array([[1.0, 0, 7], [0, 1, -4], [0, 0, 1]])
    p2 = warp_points(g, H)
    rng = np.random.default_rng(1)
    d1 = unit_rows(rng.normal(size=(100, 64)))
    assert nn_average_precision(g, p2, descriptor_distances(d1, d1), H, 3.0) == 1.0
    aps, rates = [], []
    for _ in range(25):
        d2 = d1[rng.permutation(100)]
        dist = descriptor_distances(d1, d2)
        nn = dist.argmin(1)
        rates.append((np.linalg.norm(warp_points(g, H) - p2[nn], axis=1) <= 3.0).mean())
        aps.append(nn_average_precision(g, p2, dist, H, 3.0))
    assert 0.03 < np.mean(rates) < 0.15  # chance level of this layout
    assert np.mean(aps) == pytest.approx(np.mean(rates), abs=0.05)


def test_known_homography_recovered_from_exact_correspondences():
    rng = np.random.default_rng(2)
    p1 = rng.uniform([0, 0], [319, 239], size=(50, 2))
    est = estimate_homography(p1, warp_points(p1, H_PERSP))
    assert est.ok and est.inliers.all()
    err = corner_error(H_PERSP, est.H, (240, 320))
    assert err < 1e-4
    assert homography_accuracy([err], [1, 3, 5]) == {1.0: 1.0, 3.0: 1.0, 5.0: 1.0}


def test_corner_error_by_hand():
    # a translation by (3, 4) moves every corner by 5 px
    assert corner_error(np.eye(3), np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]]), (50, 80)) == pytest.approx(5.0)
    # a scaling about the origin depends on the corners, i.e. on the image size
    S = np.diag([1.01, 1.01, 1.0])
    small = 0.01 * (0 + 319 + np.hypot(319, 239) + 239) / 4
    assert corner_error(np.eye(3), S, (240, 320)) == pytest.approx(small)
    assert corner_error(np.eye(3), S, (480, 640)) == pytest.approx(0.01 * (639 + np.hypot(639, 479) + 479) / 4)


def test_failed_estimate_counts_as_incorrect():
    p = np.array([[0.0, 0], [10, 0], [0, 10]])
    est = estimate_homography(p, p)  # 3 matches: no estimate
    assert not est.ok and not est.inliers.any()
    assert corner_error(np.eye(3), est.H, (240, 320)) == float("inf")
    line = np.c_[np.arange(8.0), np.arange(8.0)]  # collinear points: degenerate
    assert not estimate_homography(line, line).ok
    # one good pair and one failed pair: accuracy 1/2 at every threshold, the failure is not skipped
    assert homography_accuracy([0.2, float("inf")], [1, 3, 5]) == {1.0: 0.5, 3.0: 0.5, 5.0: 0.5}


def test_matching_score_by_hand():
    H = np.eye(3)
    p1 = np.array([[10.0, 10], [50, 10], [90, 10], [130, 10]])                  # 4 shared points
    p2 = np.array([[11.0, 10], [50, 14], [170, 10], [90, 12], [300, 200]])     # 5 shared points
    # mutual matches: 0-0 (1 px, correct), 1-1 (4 px, wrong), 2-3 (2 px, correct)
    m = Matches(np.array([0, 1, 2]), np.array([0, 1, 3]), np.zeros(3))
    ms, c = matching_score(p1, p2, m, H, 3.0)
    assert c == 2
    assert ms == pytest.approx(0.5 * (2 / 4 + 2 / 5))


def test_pair_metrics_perfect_pair_all_best():
    a = perfect_arrays(3)
    pair = make_pair(a["prob"][:, :2], a["warped_prob"][:, :2], a["desc"], a["warped_desc"], a["homography"],
                     scores1=a["prob"][:, 2], scores2=a["warped_prob"][:, 2])
    m = evaluate_pair(pair, load_settings()).metrics
    assert m["repeatability"] == 1.0 and m["mle"] == pytest.approx(0.0, abs=1e-3)
    assert m["homography_ok"] and m["corner_error"] < 1e-2
    assert m["nn_ap"] == 1.0 and m["matching_score"] == 1.0
    assert m["n_matches"] == 60 and m["n_correct_matches"] == 60


def test_pair_metrics_matching_score_and_shared_region():
    # image 2 is image 1 moved 100 px left: image-1 points with x < 100 fall outside image 2
    H = np.array([[1.0, 0, -100], [0, 1, 0], [0, 0, 1]])
    p1 = np.array([[120.0, 20], [150, 60], [180, 100], [210, 140], [60, 50], [30, 120]])
    p2 = warp_points(p1[:4], H)
    p2[3] += [5.0, 0]  # the 4th detection is 5 px off: not repeated, its match is wrong
    p2 = np.r_[p2, [[280.0, 200]]]  # a detection of image 2 whose inverse warp leaves image 1
    rng = np.random.default_rng(4)
    d1 = unit_rows(rng.normal(size=(6, 16)))
    d2 = np.r_[d1[:3], unit_rows(d1[3:4] + 0.3 * rng.normal(size=(1, 16))), unit_rows(rng.normal(size=(1, 16)))]
    pair = make_pair(p1, p2, d1, d2, H)
    m = evaluate_pair(pair, load_settings(), repeatability=True, homography=True).metrics
    assert m["n_shared"] == [4, 4]
    assert m["repeatability"] == pytest.approx(6 / 8)
    assert m["n_correct_matches"] == 3
    assert m["matching_score"] == pytest.approx(0.5 * (3 / 4 + 3 / 4))
    # NN list ranked by distance: three correct at distance 0, the wrong one (perturbed) last -> AP 1
    assert m["nn_ap"] == 1.0


def test_top_k_limits_every_metric():
    a = perfect_arrays(5)
    pair = make_pair(a["prob"][:, :2], a["warped_prob"][:, :2], a["desc"], a["warped_desc"], a["homography"],
                     scores1=a["prob"][:, 2], scores2=a["warped_prob"][:, 2])
    m = evaluate_pair(pair, load_settings(top_k=10)).metrics
    assert m["n_shared"] == [10, 10]
    # the 10 best of each image are different points: repeatability is their overlap
    best1 = set(np.argsort(-a["prob"][:, 2])[:10].tolist())
    order2 = np.argsort(-a["warped_prob"][:, 2])[:10]
    # image 2's point j is image 1's point perm[j]; recover perm from the descriptors
    perm = np.argmax(a["warped_desc"] @ a["desc"].T, axis=1)
    common = len(best1 & set(perm[order2].tolist()))
    assert m["repeatability"] == pytest.approx(2 * common / 20)


def test_pair_without_detections_in_one_image():
    a = perfect_arrays(6, n=20)
    pair = make_pair(a["prob"][:, :2], np.zeros((0, 2)), a["desc"], np.zeros((0, 32), np.float32),
                     a["homography"], scores1=a["prob"][:, 2])
    m = evaluate_pair(pair, load_settings()).metrics
    assert m["repeatability"] == 0.0 and np.isnan(m["mle"])
    assert not m["homography_ok"] and m["corner_error"] == float("inf")
    assert m["nn_ap"] == 0.0 and m["matching_score"] == 0.0 and m["n_matches"] == 0
    ref = evaluate_pair(pair, load_settings(protocol="reference")).metrics
    assert ref["repeatability"] == 0.0 and ref["matching_score"] == 0.0 and ref["nn_ap"] == 0.0
