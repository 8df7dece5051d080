"""Relative pose evaluation: geometry by hand, estimation, AUC, the --pose CLI (synthetic pairs)."""
import json

import numpy as np
import pytest

from evaluation import main
from evaluations.pose import estimate_relative_pose, evaluate_pose_folder, load_pose_settings, relative_pose_error
from tests.evaluation_cases import perfect_arrays, unit_rows
from utils.config import ConfigError
from utils.geometry import (
    resize_matrix,
    rotation_angle_error,
    scale_intrinsics,
    symmetric_epipolar_error,
    translation_angle_error,
)
from utils.io import atomic_save_npz
from utils.matching import mutual_nearest_neighbours

# the first pair of SuperGlue's ScanNet sample list (scene0711_00 frames 1680 / 1995), 1296 x 968
K_SCANNET = np.array([[1163.45, 0.0, 653.626], [0.0, 1164.79, 481.6], [0.0, 0.0, 1.0]])
T_SCANNET = np.array([[0.78593, -0.35128, 0.50884, -1.51061], [0.39215, 0.91944, 0.02904, -0.05367],
                      [-0.47805, 0.17672, 0.86037, 0.056], [0.0, 0.0, 0.0, 1.0]])


def rotation(axis, degrees) -> np.ndarray:
    """Rodrigues' formula, written out."""
    a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    th = np.radians(degrees)
    A = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(th) * A + (1 - np.cos(th)) * A @ A


def project(X, K):
    x = X @ K.T
    return x[:, :2] / x[:, 2:3]


def scene_matches(K0, K1, T, n=80, seed=0):
    """Exact matches of random 3-D points in front of both cameras (pixels of each image)."""
    rng = np.random.default_rng(seed)
    X0 = np.c_[rng.uniform(-1.5, 1.5, (n, 2)), rng.uniform(2.0, 6.0, n)]
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    keep = X1[:, 2] > 0.5
    return project(X0[keep], K0), project(X1[keep], K1)


def epipolar_by_hand(p0, p1, K0, K1, T) -> float:
    """One match: squared distance of x1 to the epipolar line of x0 plus x0 to that of x1 (normalised)."""
    x0 = np.linalg.solve(K0, [p0[0], p0[1], 1.0])
    x1 = np.linalg.solve(K1, [p1[0], p1[1], 1.0])
    x0, x1 = x0 / x0[2], x1 / x1[2]
    R, t = T[:3, :3], T[:3, 3]
    E = np.column_stack([np.cross(t, R[:, i]) for i in range(3)])  # [t]x R, column by column
    l1, l0 = E @ x0, E.T @ x1
    d1 = (x1 @ l1) / np.hypot(l1[0], l1[1])
    d0 = (x0 @ l0) / np.hypot(l0[0], l0[1])
    return d0 ** 2 + d1 ** 2


def test_scale_intrinsics_matches_the_resized_projection():
    K = scale_intrinsics(K_SCANNET, (968, 1296), (480, 640))
    sx, sy = 640 / 1296, 480 / 968
    assert K[0, 0] == pytest.approx(1163.45 * sx) and K[1, 1] == pytest.approx(1164.79 * sy)
    assert K[0, 2] == pytest.approx((653.626 + 0.5) * sx - 0.5) and K[1, 2] == pytest.approx((481.6 + 0.5) * sy - 0.5)
    X = np.array([[0.3, -0.2, 2.5], [-1.0, 0.7, 4.0]])
    resized = project(X, K_SCANNET) @ resize_matrix((968, 1296), (480, 640)).numpy()[:2, :2].T \
        + resize_matrix((968, 1296), (480, 640)).numpy()[:2, 2]
    assert np.allclose(project(X, K), resized)


def test_symmetric_epipolar_error_by_hand_on_a_real_scannet_pair():
    K = scale_intrinsics(K_SCANNET, (968, 1296), (480, 640))
    p0, p1 = scene_matches(K, K, T_SCANNET, n=6)
    # exact matches lie on their epipolar lines; shifted ones by a known amount
    assert np.all(symmetric_epipolar_error(p0, p1, K, K, T_SCANNET) < 1e-12)
    q1 = p1 + np.array([[3.0, 0.0], [0.0, -5.0], [10.0, 10.0], [1.0, 2.0], [-4.0, 0.5], [0.0, 0.0]])
    got = symmetric_epipolar_error(p0, q1, K, K, T_SCANNET)
    want = [epipolar_by_hand(a, b, K, K, T_SCANNET) for a, b in zip(p0, q1)]
    assert got == pytest.approx(want, rel=1e-9)
    # 5 px off the line in image 1 is about (5 / f)^2 in image 1's term alone
    assert got[1] > (0.5 * 5 / K[1, 1]) ** 2


def test_angle_errors_by_hand():
    R = rotation([0.2, 1.0, -0.3], 40.0)
    assert rotation_angle_error(R @ rotation([1, 0, 0], 3.0), R) == pytest.approx(3.0)
    t = np.array([0.3, -0.1, 0.9])
    assert translation_angle_error(rotation([0, 0, 1], 10.0) @ t, t) == pytest.approx(
        np.degrees(np.arccos((rotation([0, 0, 1], 10.0) @ t) @ t / (t @ t))))
    assert translation_angle_error(-t, t) == pytest.approx(0.0, abs=1e-6)  # the sign is free
    tilted = rotation([1, 0, 0], 170.0) @ np.array([0, 0, 1.0])
    assert translation_angle_error(tilted, [0, 0, 1.0]) == pytest.approx(10.0)
    assert relative_pose_error(np.eye(4), None, None) == (float("inf"), float("inf"))


@pytest.mark.parametrize("estimator", ["ransac", "magsac"])
def test_estimate_relative_pose_recovers_the_ground_truth(estimator):
    K = scale_intrinsics(K_SCANNET, (968, 1296), (480, 640))
    p0, p1 = scene_matches(K, K, T_SCANNET, n=100)
    rng = np.random.default_rng(3)
    outliers = rng.uniform([0, 0], [640, 480], size=(20, 2))
    q0, q1 = np.r_[p0, outliers], np.r_[p1, rng.permutation(outliers)]
    est = estimate_relative_pose(q0, q1, K, K, 1.0, 0.99999, estimator)
    err_R, err_t = relative_pose_error(T_SCANNET, est.R, est.t)
    assert err_R < 0.1 and err_t < 0.1
    assert est.inliers[:len(p0)].mean() > 0.95
    assert not estimate_relative_pose(p0[:4], p1[:4], K, K).ok  # below the five-point minimum


def test_mutual_nearest_neighbours_ratio_test():
    D = np.array([[1.0, 1.1, 5.0],    # best 1.0, second 1.1: ambiguous
                  [4.0, 0.5, 3.0],    # best 0.5, second 3.0: clear
                  [6.0, 6.0, 2.0]])   # best 2.0, second 6.0: clear
    assert mutual_nearest_neighbours(D).idx1.tolist() == [0, 1, 2]
    m = mutual_nearest_neighbours(D, ratio=0.8)
    assert m.idx1.tolist() == [1, 2] and m.idx2.tolist() == [1, 2]
    assert mutual_nearest_neighbours(D, max_distance=1.5, ratio=0.8).idx1.tolist() == [1]


def pose_arrays(n=60, seed=0, shift_last=0.0, size=(480, 640)) -> dict:
    """A pose pair file with exact matches of the real pair's geometry (identical descriptors)."""
    K = scale_intrinsics(K_SCANNET, (968, 1296), (480, 640))
    p0, p1 = scene_matches(K, K, T_SCANNET, n=n, seed=seed)
    d = unit_rows(np.random.default_rng(seed).normal(size=(len(p0), 32)))
    p1 = p1.copy()
    p1[-1] += shift_last
    return {"image": np.zeros(size, np.float32), "warped_image": np.zeros(size, np.float32),
            "K": K, "warped_K": K, "T_0to1": T_SCANNET, "name": np.str_(f"pair_{seed}"),
            "prob": np.c_[p0, np.ones(len(p0))].astype(np.float32),
            "warped_prob": np.c_[p1, np.ones(len(p1))].astype(np.float32), "desc": d, "warped_desc": d}


def test_pose_folder_counts_failures_as_infinite(tmp_path):
    pred = tmp_path / "predictions"
    pred.mkdir()
    atomic_save_npz(pred / "0.npz", **pose_arrays(80, shift_last=30.0))  # one match 30 px off its line
    atomic_save_npz(pred / "1.npz", **pose_arrays(3, seed=1))             # 3 matches: no estimate
    res = evaluate_pose_folder(pred, load_pose_settings(), progress=False)
    first, second = res["per_pair"]
    n = first["n_matches"]
    assert first["pose_ok"] and first["pose_error"] < 0.1
    assert first["precision"] == pytest.approx((n - 1) / n) and first["n_correct"] == n - 1
    assert second["pose_ok"] is False and second["pose_error"] is None and second["n_matches"] == 3
    m = res["metrics"]
    # errors (e, inf) with e < 0.1: AUC@t = (t - e / 2) * 0.5 / t, about 0.5
    e = first["pose_error"]
    assert m["pose_auc"] == pytest.approx({k: (t - e / 2) * 0.5 / t for k, t in (("5", 5), ("10", 10), ("20", 20))})
    assert m["pose_failures"] == 1 and m["mean_matches"] == pytest.approx((n + 3) / 2)
    assert m["precision"] == pytest.approx(((n - 1) / n + 1.0) / 2)


def test_cli_pose_prints_header_and_table_writes_results_and_pictures(tmp_path, capsys):
    pred = tmp_path / "logs" / "run" / "predictions"
    pred.mkdir(parents=True)
    atomic_save_npz(pred / "0.npz", **pose_arrays(80))
    assert main([str(pred), "--pose", "--plotMatching", "--no-progress",
                 "--set", "evaluation.pose.ransac_threshold=0.5", "--set", "evaluation.pose.confidence=0.999"]) == 0
    out = capsys.readouterr().out
    assert "cv2.findEssentialMat cv2.RANSAC, threshold 0.5 px / mean focal, confidence 0.999" in out
    assert "| Pairs | k " in out and "AUC@5" in out and "AUC@20" in out and "Precision" in out
    res = json.loads((pred.parent / "results.json").read_text())
    assert res["kind"] == "relative_pose" and res["settings"]["ransac_threshold"] == 0.5
    assert res["metrics"]["pose_auc"]["5"] > 0.98 and res["metrics"]["precision"] == 1.0
    assert (pred.parent / "results.txt").read_text().startswith("Relative pose evaluation of")
    assert (pred.parent / "results_images" / "matching" / "0.png").is_file()


def test_cli_pose_errors_are_one_line(tmp_path, capsys):
    pose = tmp_path / "pose"
    pose.mkdir()
    atomic_save_npz(pose / "0.npz", **pose_arrays(10))
    hp = tmp_path / "hp"
    hp.mkdir()
    atomic_save_npz(hp / "0.npz", **perfect_arrays(0, n=10))
    assert main([str(hp), "--pose"]) == 2
    assert "missing key 'K'" in capsys.readouterr().err
    assert main([str(pose)]) == 2
    assert "evaluate them with --pose" in capsys.readouterr().err
    assert main([str(pose), "--pose", "-r"]) == 2
    assert "--pose cannot be combined" in capsys.readouterr().err
    assert main([str(pose), "--pose", "--set", "evaluation.pose.estimator=lmeds"]) == 2
    assert "evaluation.pose.estimator" in capsys.readouterr().err
    bad = pose_arrays(10)
    bad["T_0to1"] = np.eye(3)
    atomic_save_npz(pose / "0.npz", **bad)
    assert main([str(pose), "--pose"]) == 2
    assert "T_0to1" in capsys.readouterr().err


def test_cli_pose_refuses_partial_and_mixed_sets_unless_allowed(tmp_path, capsys):
    from utils.io import EXPORT_MANIFEST, file_sha256

    pred = tmp_path / "run" / "predictions"
    pred.mkdir(parents=True)
    for i in (0, 2):  # no manifest and a gap at 1.npz: a partial set
        atomic_save_npz(pred / f"{i}.npz", **pose_arrays(80, seed=i))
    assert main([str(pred), "--pose", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "partial export: 2 files but the numbering runs to 2.npz" in err
    assert main([str(pred), "--pose", "--no-progress", "--allow-partial"]) == 0
    assert "warning:" in capsys.readouterr().err
    assert json.loads((pred.parent / "results.json").read_text())["num_pairs"] == 2
    # a manifest as export_pairs writes it; 2.npz then changes: a mixed set
    atomic_save_npz(pred / "1.npz", **pose_arrays(80, seed=1))
    files = {f"{i}.npz": file_sha256(pred / f"{i}.npz") for i in range(3)}
    (pred.parent / EXPORT_MANIFEST).write_text(json.dumps({"task": "export_pairs", "predictions": "predictions",
                                                           "expected": 3, "completed": 3, "files": files}))
    assert main([str(pred), "--pose", "--no-progress"]) == 0
    capsys.readouterr()
    atomic_save_npz(pred / "2.npz", **pose_arrays(80, seed=5))
    assert main([str(pred), "--pose", "--no-progress"]) == 2
    assert "2 of 3 pairs match" in capsys.readouterr().err


def test_error_colors_green_yellow_red():
    from utils.draw import GREEN, RED, YELLOW, error_colors

    c = error_colors(np.array([0.0, 5e-4, 1e-3, np.inf, 2.5e-4]), 5e-4)
    assert [tuple(v) for v in c[:4]] == [GREEN, YELLOW, RED, RED]
    assert tuple(c[4]) == tuple(np.round((np.array(GREEN) + np.array(YELLOW)) / 2).astype(int))


def test_pose_settings_checks():
    with pytest.raises(ConfigError, match="evaluation.pose.ratio"):
        load_pose_settings(["evaluation.pose.ratio=1.5"])
    assert load_pose_settings(["evaluation.nn_thresh=0.7"]).match_thresh == 0.7
    assert load_pose_settings(["evaluation.nn_thresh=0.7"], sift=True).match_thresh is None
