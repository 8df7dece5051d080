"""evaluation.py end to end on small prediction folders built here, and its one-line errors."""
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from evaluation_cases import perfect_arrays

from evaluation import main
from utils.io import atomic_save_npz

REPO = Path(__file__).resolve().parent.parent


def write_folder(root: Path, n: int = 3, failing: bool = True) -> Path:
    """``root/logs/run/predictions`` with ``n`` perfect pairs, plus one pair that cannot be matched."""
    pred = root / "logs" / "run" / "predictions"
    pred.mkdir(parents=True)
    for i in range(n):
        atomic_save_npz(pred / f"{i}.npz", **perfect_arrays(i, n=40))
    if failing:  # three points per image: no homography can be estimated
        a = perfect_arrays(99, n=3)
        atomic_save_npz(pred / f"{n}.npz", **a)
    return pred


def test_cli_end_to_end_known_answers(tmp_path, capsys):
    pred = write_folder(tmp_path)
    assert main([str(pred), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Repeatability" in out and "| ours" in out
    res = json.loads((pred.parent / "results.json").read_text())
    assert (pred.parent / "results.txt").read_text().startswith("HPatches evaluation of")
    assert res["schema_version"] == 1 and res["num_pairs"] == 4
    assert res["tasks"] == {"repeatability": True, "homography": True}
    s = res["settings"]
    assert (s["protocol"], s["top_k"], s["correctness_distance"], s["ransac_threshold"]) == ("ours", 1000, 3.0, 3.0)
    assert "opencv_version" in s and s["sift"] is False
    m = res["metrics"]
    # every pair is perfect except the last, which fails and counts as incorrect
    assert m["homography_accuracy"] == {"1": 0.75, "3": 0.75, "5": 0.75}
    assert m["homography_failures"] == 1
    assert m["repeatability"] == pytest.approx(1.0)
    assert m["mle"] == pytest.approx(0.0, abs=1e-3) and m["mle_pairs"] == 4
    assert m["nn_map"] == pytest.approx(1.0) and m["matching_score"] == pytest.approx(1.0)
    files = [p["file"] for p in res["per_pair"]]
    assert files == ["0.npz", "1.npz", "2.npz", "3.npz"]
    last = res["per_pair"][3]
    assert last["homography_ok"] is False and last["corner_error"] is None and last["name"] == "perfect_99"


def test_cli_repeatability_only_needs_no_descriptors_and_top_k(tmp_path, capsys):
    pred = tmp_path / "preds"
    pred.mkdir()
    for i in range(2):
        a = perfect_arrays(i, n=30)
        del a["desc"], a["warped_desc"], a["name"], a["index"]
        atomic_save_npz(pred / f"{i}.npz", **a)
    out_dir = tmp_path / "out"
    assert main([str(pred), "-r", "--top-k", "10", "--output", str(out_dir), "--no-progress"]) == 0
    res = json.loads((out_dir / "results.json").read_text())
    assert res["tasks"] == {"repeatability": True, "homography": False}
    assert res["settings"]["top_k"] == 10
    assert "homography_accuracy" not in res["metrics"] and "nn_map" not in res["metrics"]
    assert all(p["n_shared"] == [10, 10] for p in res["per_pair"])
    assert res["per_pair"][0]["name"] is None


def test_cli_reference_protocol_writes_its_own_files_and_pictures(tmp_path, capsys):
    pred = write_folder(tmp_path, n=2, failing=False)
    assert main([str(pred), "--protocol", "reference", "-r", "-homo", "-o", "--plotMatching", "--no-progress",
                 "--set", "evaluation.ransac.threshold=2.5"]) == 0
    res = json.loads((pred.parent / "results_reference.json").read_text())
    assert res["settings"]["protocol"] == "reference" and res["settings"]["ransac_threshold"] == 2.5
    assert res["settings"]["corner_image_size"] == [240, 320]
    images = pred.parent / "results_reference_images"
    for sub in ("detections", "warping", "matching"):
        assert sorted(p.name for p in (images / sub).iterdir()) == ["0.png", "1.png"]
    import cv2
    pic = cv2.imread(str(images / "matching" / "0.png"))
    assert pic is not None and pic.shape[1] > 2 * 320  # both images side by side


def test_cli_sift_predictions(tmp_path, capsys):
    pred = tmp_path / "sift" / "predictions"
    pred.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        a = perfect_arrays(i, n=30)
        d = rng.integers(0, 256, size=(30, 128)).astype(np.uint8)
        perm = np.argmax(a["warped_desc"] @ a["desc"].T, axis=1)  # image 2's order
        a.update(prob=a["prob"][:, :2], warped_prob=a["warped_prob"][:, :2], desc=d, warped_desc=d[perm])
        atomic_save_npz(pred / f"{i}.npz", **a)
    assert main([str(pred), "--sift", "-r", "-homo", "--no-progress", "--set", "evaluation.nn_thresh=1.0"]) == 0
    res = json.loads((pred.parent / "results.json").read_text())
    assert res["settings"]["sift"] is True and res["settings"]["nn_thresh"] is None
    assert res["metrics"]["homography_accuracy"]["1"] == 1.0 and res["metrics"]["nn_map"] == pytest.approx(1.0)


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case, expected", [
    ("missing_folder", "predictions folder not found"),
    ("empty_folder", "no prediction files"),
    ("missing_key", "1.npz: missing key 'warped_desc'"),
    ("transposed_desc", "1.npz: key 'desc' has shape (32, 40)"),
    ("bad_prob", "1.npz: key 'warped_prob' must be N x 3"),
    ("bad_homography", "1.npz: key 'homography' must be 3 x 3"),
    ("truncated", "1.npz: not a readable .npz file"),
    ("bad_override", "unknown key 'evaluation.topk'"),
])
def test_cli_bad_input_one_line_error_exit_2(tmp_path, capsys, case, expected):
    pred = tmp_path / "predictions"
    args = []
    if case != "missing_folder":
        pred.mkdir()
    if case not in ("missing_folder", "empty_folder"):
        atomic_save_npz(pred / "0.npz", **perfect_arrays(0, n=40))
        a = perfect_arrays(1, n=40)
        if case == "missing_key":
            del a["warped_desc"]
        if case == "transposed_desc":
            a["desc"] = a["desc"].T.copy()
        if case == "bad_prob":
            a["warped_prob"] = a["warped_prob"][:, :1]
        if case == "bad_homography":
            a["homography"] = np.eye(2)
        atomic_save_npz(pred / "1.npz", **a)
        if case == "truncated":
            corrupt(pred / "1.npz")
        if case == "bad_override":
            args = ["--set", "evaluation.topk=3"]
    assert main([str(pred), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1]
    assert not (tmp_path / "results.json").exists()


def test_cli_exit_code_in_a_subprocess(tmp_path):
    pred = tmp_path / "p"
    pred.mkdir()
    a = perfect_arrays(0, n=20)
    del a["prob"]
    atomic_save_npz(pred / "0.npz", **a)
    r = subprocess.run([sys.executable, "evaluation.py", str(pred), "-homo", "--no-progress"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"error: {pred / '0.npz'}: missing key 'prob' " \
        f"(has: desc, homography, image, index, name, warped_desc, warped_image, warped_prob)"


def test_cli_segmentation_dispatch(tmp_path, capsys, monkeypatch):
    calls = []

    def fake(pred_dir, output_img, category_file):
        calls.append((pred_dir, output_img, category_file))
        return {"mIoU": 0.625, "pixel_accuracy": 0.9}

    monkeypatch.setitem(sys.modules, "evaluations.segmentation",
                        types.SimpleNamespace(evaluate_segmentation_folder=fake))
    pred = tmp_path / "preds"
    pred.mkdir()
    assert main([str(pred), "--category-file", "cats.json", "-o", "--no-progress"]) == 0
    assert calls == [(pred, True, "cats.json")]
    out = capsys.readouterr().out
    assert "mIoU" in out and "0.6250" in out
    assert not (tmp_path / "results.json").exists()  # no HPatches metrics were asked for


def test_ransac_order_accuracy_known_answer(tmp_path):
    """Three perfect pairs and one that cannot be matched: every order gets 3 of 4 right, at every
    threshold; a pair whose matches are all shifted by 2 px is right at eps 3 and 5 only."""
    from evaluations.hpatches_report import ransac_order_accuracy
    from evaluations.protocols import load_settings

    pred = write_folder(tmp_path)
    a = perfect_arrays(7, n=40)
    a["warped_prob"] = a["warped_prob"].copy()
    a["warped_prob"][:, 0] += 2.0  # every match 2 px off in x: corner error exactly 2
    atomic_save_npz(pred / "4.npz", **a)
    acc = ransac_order_accuracy(pred, load_settings(), orders=6)
    assert acc.shape == (6, 3)
    np.testing.assert_allclose(acc, np.tile([[3 / 5, 4 / 5, 4 / 5]], (6, 1)))
