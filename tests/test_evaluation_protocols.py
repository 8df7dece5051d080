"""Settings, and the reference protocol on small cases where its definitions differ from ours."""
import cv2
import numpy as np
import pytest
from evaluation_cases import make_pair, unit_rows

from evaluations.hpatches_report import aggregate
from evaluations.pair_metrics import evaluate_pair
from evaluations.protocols import load_settings
from utils.config import ConfigError

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

OURS = load_settings()
REF = load_settings(protocol="reference")


def spread_points(rng, n, lo, hi, min_dist=10.0):
    pts = []
    while len(pts) < n:
        p = rng.uniform(lo, hi)
        if all(np.hypot(*(p - q)) >= min_dist for q in pts):
            pts.append(p)
    return np.round(np.array(pts))


def test_settings_from_config_and_cli_precedence():
    s = load_settings(["evaluation.top_k=300", "evaluation.ransac.threshold=2", "evaluation.protocol=reference"])
    assert (s.top_k, s.ransac_threshold, s.protocol) == (300, 2.0, "reference")
    s = load_settings(["evaluation.top_k=300"], protocol="ours", top_k=1000, sift=True)
    assert (s.top_k, s.protocol, s.sift) == (1000, "ours", True)
    rec = s.record()
    assert rec["opencv_version"] == cv2.__version__ and rec["homography_thresholds"] == [1.0, 3.0, 5.0]
    assert rec["correctness_distance"] == 3.0 and rec["ransac_threshold"] == 3.0


@pytest.mark.parametrize("override, key", [
    ("evaluation.protocol=paper", "evaluation.protocol"),
    ("evaluation.top_k=-1", "evaluation.top_k"),
    ("evaluation.homography_thresholds=[]", "evaluation.homography_thresholds"),
    ("evaluation.nn_thresh=-1", "evaluation.nn_thresh"),
    ("evaluation.descriptor_metric=cosine", "evaluation.descriptor_metric"),
    ("evaluation.ransac.confidence=1.5", "evaluation.ransac.confidence"),
    ("evaluation.top_kk=3", "evaluation.top_kk"),
])
def test_bad_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings([override])


def test_reference_corner_error_uses_a_fixed_240x320_frame():
    # detections follow a 1 % scaling about the origin, but the file's homography is the identity:
    # the estimate is the scaling, whose corner error depends on which corners are measured
    rng = np.random.default_rng(0)
    p1 = spread_points(rng, 40, [0, 0], [600, 450], 20)
    d = unit_rows(rng.normal(size=(40, 32)))
    pair = make_pair(p1, p1 * 1.01, d, d, np.eye(3), size=(480, 640))
    ours = evaluate_pair(pair, OURS).metrics["corner_error"]
    ref = evaluate_pair(pair, REF).metrics["corner_error"]
    assert ours == pytest.approx(0.01 * (639 + np.hypot(639, 479) + 479) / 4, abs=1e-3)  # 4.79 px
    assert ref == pytest.approx(0.01 * (319 + np.hypot(319, 239) + 239) / 4, abs=1e-3)   # 2.39 px


def translated_pair():
    """20 detections moved 5 px right in image 2 while the file's homography is the identity:
    for us every match is 5 px wrong; for RANSAC they are all consistent (inliers)."""
    rng = np.random.default_rng(1)
    left = spread_points(rng, 10, [20, 20], [200, 220])
    right = spread_points(rng, 10, [250, 20], [300, 220])
    p1 = np.r_[left, right]
    d = unit_rows(rng.normal(size=(20, 32)))
    return make_pair(p1, p1 + [5.0, 0.0], d, d, np.eye(3))


def test_reference_nn_map_labels_by_ransac_inliers():
    pair = translated_pair()
    assert evaluate_pair(pair, OURS).metrics["nn_ap"] == 0.0
    assert evaluate_pair(pair, REF).metrics["nn_ap"] == 1.0


def test_reference_matching_score_counts_inliers_over_its_point_count():
    pair = translated_pair()
    ours = evaluate_pair(pair, OURS).metrics
    ref = evaluate_pair(pair, REF).metrics
    assert ours["matching_score"] == 0.0 and ours["n_correct_matches"] == 0
    assert ref["n_inliers"] == 20
    # 2 * inliers / (all 20 points of image 1 + image-2 points counted "inside" by the reference,
    # which swaps (x, y): only the 10 with x <= 239 pass its y <= H - 1 test) = 40 / 30
    assert ref["matching_score"] == pytest.approx(40 / 30)


def test_reference_mle_average_skips_exact_zero_errors():
    rng = np.random.default_rng(2)
    p1 = spread_points(rng, 15, [10, 10], [300, 220])
    T = np.array([[1.0, 0, 4], [0, 1, 2], [0, 0, 1]])
    perfect = make_pair(p1, p1 + [4, 2], H=T)
    shifted = make_pair(p1, p1 + [5, 2], H=T)  # every detection 1 px off
    for settings, expected in ((OURS, 0.5), (REF, 1.0)):
        per_pair = [evaluate_pair(p, settings, homography=False).metrics for p in (perfect, shifted)]
        assert [m["mle"] for m in per_pair] == [0.0, 1.0]
        agg = aggregate(per_pair, settings, repeatability=True, homography=False)
        assert agg["mle"] == pytest.approx(expected)


def test_reference_keeps_every_point_without_scores():
    rng = np.random.default_rng(3)
    p1 = spread_points(rng, 20, [10, 10], [300, 220])
    pair = make_pair(p1, p1)  # N x 2 points, no scores
    s_ours, s_ref = load_settings(top_k=5), load_settings(protocol="reference", top_k=5)
    assert evaluate_pair(pair, s_ours, homography=False).metrics["n_shared"] == [5, 5]  # first 5 in file order
    assert evaluate_pair(pair, s_ref, homography=False).metrics["n_shared"] == [20, 20]


def sift_like_pair():
    """Classical descriptors: uint8 values up to 255, 128-d, not unit vectors; points without scores."""
    rng = np.random.default_rng(4)
    p1 = spread_points(rng, 30, [10, 10], [300, 220])
    d1 = rng.integers(0, 256, size=(30, 128)).astype(np.uint8)
    d2 = np.clip(d1.astype(int) + rng.integers(-3, 4, size=d1.shape), 0, 255).astype(np.uint8)
    T = np.array([[1.0, 0, 6], [0, 1, -3], [0, 0, 1]])
    return make_pair(p1, p1 + [6, -3], d1, d2, T)


def test_sift_flag_reference_nn_map_uses_plain_l2_matches():
    pair = sift_like_pair()
    # without --sift the reference's unit-vector distance collapses to 0 for every pair: one match
    assert evaluate_pair(pair, REF).metrics["nn_ap"] == 0.0
    m = evaluate_pair(pair, load_settings(protocol="reference", sift=True)).metrics
    assert m["nn_ap"] == 1.0 and m["n_matches"] == 30


def test_sift_flag_ours_ignores_the_unit_descriptor_threshold():
    pair = sift_like_pair()
    m = evaluate_pair(pair, load_settings(["evaluation.nn_thresh=1.0"])).metrics
    assert m["n_matches"] == 0 and not m["homography_ok"]  # distances are in the tens: all cut
    m = evaluate_pair(pair, load_settings(["evaluation.nn_thresh=1.0"], sift=True)).metrics
    assert m["n_matches"] == 30 and m["homography_ok"] and m["corner_error"] < 1e-3
    assert m["nn_ap"] == 1.0 and m["matching_score"] == 1.0


def test_hamming_metric_for_binary_descriptors():
    rng = np.random.default_rng(5)
    p1 = spread_points(rng, 25, [10, 10], [300, 220])
    d1 = rng.integers(0, 256, size=(25, 32)).astype(np.uint8)  # ORB: 256 bits
    d2 = d1.copy()
    d2[:, 0] ^= 1  # one bit flipped everywhere
    pair = make_pair(p1, p1, d1, d2)
    m = evaluate_pair(pair, load_settings(["evaluation.descriptor_metric=hamming"], sift=True)).metrics
    assert m["n_correct_matches"] == 25 and m["nn_ap"] == 1.0
