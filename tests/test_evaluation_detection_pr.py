import numpy as np
import pytest

from evaluations.detection_pr import DetectionAccumulator, average_precision, match_detections


def test_greedy_one_to_one_matching():
    gt = np.array([[10.0, 10.0], [30.0, 30.0]])
    pts = np.array([[10.5, 10.0], [11.0, 11.0], [50.0, 50.0], [31.0, 30.0]])
    scores = np.array([0.9, 0.95, 0.8, 0.1])
    # (11,11) has the higher score and takes gt 0; (10.5,10) finds it taken
    assert match_detections(pts, scores, gt, 2.0).tolist() == [False, True, False, True]


def test_precision_recall_and_map_by_hand():
    acc = DetectionAccumulator(2.0)
    acc.add([[0, 0], [5, 5], [20, 20]], [0.9, 0.8, 0.3], [[0, 1], [20, 21], [40, 40]])
    # ranking: 0.9 TP, 0.8 FP, 0.3 TP ; 3 gt
    r = acc.result(threshold=0.5)
    assert r["precision"] == pytest.approx(1 / 2) and r["recall"] == pytest.approx(1 / 3)
    # AP = 1 * 1/3 + (2/3) * 1/3
    assert r["mAP"] == pytest.approx(1 / 3 + 2 / 9)
    perfect = average_precision(np.array([0.5, 0.4]), np.array([True, True]), 2)
    assert perfect == pytest.approx(1.0)


def test_offset_profile_separates_a_ring_beside_corners_from_the_background():
    # two corners; detections: one on each (0.5 px off), two 4 px beside the first corner
    # (a "ring"), one 20 px away, and one below the threshold that must not count
    gt = np.array([[10.0, 10.0], [50.0, 30.0]])
    pts = np.array([[10.5, 10.0], [50.0, 30.5], [14.0, 10.0], [10.0, 6.0], [30.0, 30.0], [70.0, 70.0]])
    scores = np.array([0.9, 0.8, 0.5, 0.4, 0.3, 0.001])
    acc = DetectionAccumulator(distance=2.0)
    acc.add(pts, scores, gt)
    acc.add(np.array([[5.0, 5.0]]), np.array([0.6]), np.zeros((0, 2)))  # an image without ground truth
    r = acc.result(threshold=0.015)
    assert r["num_detections"] == 6 and r["num_ground_truth"] == 2
    assert r["detections_per_gt"] == 3.0
    assert r["offset_shares"] == {"on": 2 / 6, "beside": 2 / 6, "away": 2 / 6}
    assert r["precision"] == 2 / 6
