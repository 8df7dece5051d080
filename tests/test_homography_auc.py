"""Homography AUC of the corner error (LightGlue / glue-factory definition) on hand-worked cases."""
import json

import numpy as np
import pytest

from evaluation import main
from evaluations.auc import error_auc
from tests.evaluation_cases import unit_rows
from utils.geometry import homography_dlt, warp_points
from utils.io import atomic_save_npz

SIZE = (240, 320)


def shifted_grid_arrays(dx: float, n_side: int = 5, seed: int = 0) -> dict:
    """Image 2's points are image 1's grid moved right by ``dx`` px while the true homography is
    the identity: every estimate is the translation by dx, so each corner is off by exactly dx."""
    xs, ys = np.meshgrid(np.linspace(30, 290, n_side), np.linspace(30, 210, n_side))
    p1 = np.c_[xs.ravel(), ys.ravel()]
    p2 = p1 + [dx, 0.0]
    d = unit_rows(np.random.default_rng(seed).normal(size=(len(p1), 16)))
    scores = np.linspace(1.0, 0.5, len(p1))
    return {"image": np.zeros(SIZE, np.float32), "warped_image": np.zeros(SIZE, np.float32),
            "homography": np.eye(3), "prob": np.c_[p1, scores].astype(np.float32),
            "warped_prob": np.c_[p2, scores].astype(np.float32), "desc": d, "warped_desc": d}


def test_error_auc_hand_computed():
    # sorted errors 1, 2, 4, inf -> curve through (0,0) (1,.25) (2,.5) (4,.75); the failure never enters
    # t=5: [.125 + .375 + 2 * .625 + .75] / 5 = 0.5 ; t=3: [.125 + .375 + .5] / 3 ; t=2.5: [.125 + .375 + .25] / 2.5
    auc = error_auc([4.0, np.inf, 1.0, 2.0], [1.0, 2.5, 3.0, 5.0])
    assert auc[1.0] == pytest.approx(0.0)  # an error equal to the threshold does not count (strictly below)
    assert auc[2.5] == pytest.approx(0.3)
    assert auc[3.0] == pytest.approx(1.0 / 3.0)
    assert auc[5.0] == pytest.approx(0.5)
    assert error_auc([0.0, 0.0], [1.0])[1.0] == pytest.approx(1.0)
    assert error_auc([np.nan, np.inf], [1.0])[1.0] == 0.0
    assert np.isnan(error_auc([], [1.0])[1.0])


def test_homography_dlt_recovers_a_known_homography_and_fails_on_too_few_points():
    H = np.array([[0.9, 0.05, 12.0], [-0.04, 1.1, -7.0], [1e-4, -2e-4, 1.0]])
    p = np.random.default_rng(1).uniform(0, 300, size=(30, 2))
    est = homography_dlt(p, warp_points(p, H))
    assert np.allclose(est, H, atol=1e-8)
    assert homography_dlt(p[:3], p[:3]) is None
    assert homography_dlt(np.zeros((6, 2)), p[:6]) is None  # all source points at one place


@pytest.mark.parametrize("estimator", ["ransac", "dlt"])
def test_cli_homography_auc_on_known_corner_errors(tmp_path, capsys, estimator):
    pred = tmp_path / "logs" / "run" / "predictions"
    pred.mkdir(parents=True)
    for i, dx in enumerate([0.5, 2.0, 4.0]):
        atomic_save_npz(pred / f"{i}.npz", **shifted_grid_arrays(dx, seed=i))
    atomic_save_npz(pred / "3.npz", **shifted_grid_arrays(0.0, n_side=1))  # 1 point: estimation fails
    assert main([str(pred), "-homo", "--no-progress", "--set", f"evaluation.homography_auc.estimator={estimator}"]) == 0
    out = capsys.readouterr().out
    assert "H AUC@1px" in out and "H AUC@5px" in out
    res = json.loads((pred.parent / "results.json").read_text())
    key = "corner_error_dlt" if estimator == "dlt" else "corner_error"
    errors = [p[key] for p in res["per_pair"]]
    assert errors[:3] == pytest.approx([0.5, 2.0, 4.0], abs=1e-6) and errors[3] is None
    # by hand, errors 0.5, 2, 4, inf: t=1: (.5 * .125 + .5 * .25) / 1 ; t=3: (.0625 + 1.5 * .375 + .5) / 3 ;
    # t=5: (.0625 + .5625 + 2 * .625 + .75) / 5
    assert res["metrics"]["homography_auc"] == pytest.approx({"1": 0.1875, "3": 0.375, "5": 0.525}, abs=1e-6)
    assert res["settings"]["homography_estimator"] == estimator
    assert res["settings"]["homography_auc_thresholds"] == [1.0, 3.0, 5.0]
    # the paper's accuracy is unchanged beside it (corner error <= eps, RANSAC estimate)
    assert res["metrics"]["homography_accuracy"] == {"1": 0.25, "3": 0.5, "5": 0.75}
    assert "homography AUC: corner error of the " + estimator in (pred.parent / "results.txt").read_text()


def test_cli_dlt_differs_from_ransac_with_an_outlier(tmp_path, capsys):
    """One wrong match: RANSAC drops it (error stays dx), the plain DLT on all matches does not."""
    pred = tmp_path / "logs" / "run" / "predictions"
    pred.mkdir(parents=True)
    a = shifted_grid_arrays(1.0)
    a["warped_prob"][0, :2] += [60.0, -40.0]
    atomic_save_npz(pred / "0.npz", **a)
    assert main([str(pred), "-homo", "--no-progress", "--set", "evaluation.homography_auc.estimator=dlt"]) == 0
    p = json.loads((pred.parent / "results.json").read_text())["per_pair"][0]
    assert p["corner_error"] == pytest.approx(1.0, abs=1e-6)
    assert p["corner_error_dlt"] > 2.0


def test_bad_estimator_is_a_one_line_error(tmp_path, capsys):
    pred = tmp_path / "p"
    pred.mkdir()
    atomic_save_npz(pred / "0.npz", **shifted_grid_arrays(1.0))
    assert main([str(pred), "--set", "evaluation.homography_auc.estimator=lmeds"]) == 2
    err = capsys.readouterr().err
    assert "evaluation.homography_auc.estimator" in err and "ransac or dlt" in err
