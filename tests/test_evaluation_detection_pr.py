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
