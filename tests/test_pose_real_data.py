"""Pose pair lists on the real files of ../shared/data, and the whole pose path on the 15 ScanNet pairs.

The LoFTR metadata come without images: stand-in images are written at the paths they name.
"""
import json

import cv2
import numpy as np
import pytest

from datasets import get_dataset
from datasets.pose_pairs import read_loftr_megadepth, read_loftr_scannet, read_superglue_pairs
from evaluation import main as evaluation_main
from evaluations.pose import evaluate_pose_folder, load_pose_settings
from exporters.predictions import PAIR_GEOMETRY
from tests.conftest import REPO
from utils.cli import UserError
from utils.config import load_config
from utils.geometry import resize_matrix

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

CONFIG = REPO / "configs" / "pose_scannet_sample.yaml"


def stand_in(path, size, seed=0):
    """A textured gray stand-in image of ``size`` (H, W) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(path), img)


def pose_config(root, pairs, fmt, **prep):
    sets = [f"data.root={root}", f"data.pairs={pairs}", f"data.pairs_format={fmt}"]
    sets += [f"data.preprocessing.{k}={v}" for k, v in prep.items()]
    return load_config(CONFIG, sets)


def test_superglue_list_real_file(shared_data):
    pairs = read_superglue_pairs(shared_data / "photos" / "scannet_sample_pairs_with_gt.txt")
    assert len(pairs) == 15
    assert (pairs[0]["name0"], pairs[0]["name1"]) == ("scene0711_00_frame-001680.jpg", "scene0711_00_frame-001995.jpg")
    assert pairs[0]["K0"][0, 0] == 1163.45 and pairs[0]["T_0to1"][0, 3] == -1.51061
    ds = get_dataset(pose_config(shared_data / "photos" / "scannet",
                                 shared_data / "photos" / "scannet_sample_pairs_with_gt.txt", "superglue"), "test")
    item = ds[0]
    assert tuple(item["image"].shape) == (1, 480, 640) and tuple(item["warped_image"].shape) == (1, 480, 640)
    K = item["K"].numpy()
    assert K[0, 0] == pytest.approx(1163.45 * 640 / 1296) and K[1, 1] == pytest.approx(1164.79 * 480 / 968)
    assert K[0, 2] == pytest.approx((653.626 + 0.5) * 640 / 1296 - 0.5)
    assert np.array_equal(item["T_0to1"].numpy(), pairs[0]["T_0to1"])


def test_superglue_list_errors_name_the_line(tmp_path):
    good = "a.jpg b.jpg 0 0 " + " ".join(["1", "0", "5", "0", "1", "5", "0", "0", "1"] * 2) + " " + \
        " ".join(str(v) for v in np.eye(4).ravel())
    (tmp_path / "p.txt").write_text(good + "\n" + good.replace(" 0 0 ", " 90 0 ", 1) + "\n")
    with pytest.raises(ValueError, match=r"p.txt:2: rot0/rot1 = 90/0"):
        read_superglue_pairs(tmp_path / "p.txt")
    (tmp_path / "q.txt").write_text("a.jpg b.jpg 0 0 1 2 3\n")
    with pytest.raises(ValueError, match=r"q.txt:1: expected 38 fields"):
        read_superglue_pairs(tmp_path / "q.txt")


def test_loftr_scannet_layout_real_files(shared_data, tmp_path):
    npz = shared_data / "pose_layouts" / "loftr" / "scannet_test_1500" / "test.npz"
    pairs = read_loftr_scannet(npz)
    assert len(pairs) == 1500
    with np.load(npz) as d:
        name, rel = d["name"][7], d["rel_pose"][7]
    with np.load(npz.parent / "intrinsics.npz") as d:
        K_scene = d[f"scene{name[0]:04d}_{name[1]:02d}"]
    p = pairs[7]
    assert p["name0"] == f"scene{name[0]:04d}_{name[1]:02d}/color/{name[2]}.jpg"
    assert p["name1"] == f"scene{name[0]:04d}_{name[1]:02d}/color/{name[3]}.jpg"
    assert np.allclose(p["T_0to1"][:3], rel.reshape(3, 4)) and np.array_equal(p["T_0to1"][3], [0, 0, 0, 1])
    # stand-ins stored at ScanNet's colour size: the intrinsics still describe 640 x 480 (as LoFTR uses them)
    root = tmp_path / "scannet_test_1500"
    stand_in(root / p["name0"], (968, 1296))
    stand_in(root / p["name1"], (968, 1296), seed=1)
    cfg = pose_config(root, npz, "loftr_scannet", resize="[240,320]")
    ds = get_dataset(cfg, "test")
    assert len(ds) == 1500
    item = ds[7]
    assert tuple(item["image"].shape) == (1, 240, 320)
    want = resize_matrix((480, 640), (240, 320)).numpy() @ K_scene
    assert np.allclose(item["K"].numpy(), want) and np.allclose(item["warped_K"].numpy(), want)
    with pytest.raises(FileNotFoundError, match="color/.*jpg: image of the pair list"):
        ds[0]


def test_loftr_megadepth_layout_real_files(shared_data, tmp_path):
    folder = shared_data / "pose_layouts" / "loftr" / "megadepth_test_1500_scene_info"
    pairs = read_loftr_megadepth(folder / "megadepth_test_1500.txt")
    assert len(pairs) == 1500
    first_scene = (folder / "megadepth_test_1500.txt").read_text().split()[0]
    info = np.load(folder / f"{first_scene}.npz", allow_pickle=True)
    (i, j), _, _ = info["pair_infos"][0]
    p = pairs[0]
    assert (p["name0"], p["name1"]) == (info["image_paths"][i], info["image_paths"][j])
    assert np.allclose(p["T_0to1"], info["poses"][j] @ np.linalg.inv(info["poses"][i]))
    assert np.array_equal(p["K1"], info["intrinsics"][j])
    assert len(read_loftr_megadepth(folder / f"{first_scene}.npz")) == len(info["pair_infos"])
    # stand-ins: a 1600 x 1064 landscape and a portrait; longer side to 1200, the other floored to 8
    root = tmp_path / "megadepth"
    stand_in(root / p["name0"], (1064, 1600))
    stand_in(root / p["name1"], (1600, 1064), seed=1)
    ds = get_dataset(pose_config(root, folder / "megadepth_test_1500.txt", "loftr_megadepth",
                                 resize="null", resize_max=1200), "test")
    item = ds[0]
    assert tuple(item["image"].shape) == (1, 792, 1200)   # 1064 * 0.75 = 798 -> 792
    assert tuple(item["warped_image"].shape) == (1, 1200, 792)
    assert np.allclose(item["K"].numpy(), resize_matrix((1064, 1600), (792, 1200)).numpy() @ info["intrinsics"][i])
    assert np.allclose(item["warped_K"].numpy(),
                       resize_matrix((1600, 1064), (1200, 792)).numpy() @ info["intrinsics"][j])


def test_pose_dataset_config_errors(shared_data):
    with pytest.raises(ValueError, match="data.pairs: the pose_pairs dataset needs a pair list"):
        get_dataset(load_config(CONFIG, ["data.pairs=null"]), "test")
    with pytest.raises(ValueError, match="set resize or resize_max, not both"):
        get_dataset(pose_config(shared_data / "photos" / "scannet",
                                shared_data / "photos" / "scannet_sample_pairs_with_gt.txt", "superglue",
                                resize_max=1200), "test")


def export(tool, name, shared_data, size="[240,320]"):
    """``export.py`` / ``export_classical.py export_pairs`` on the 15 real pairs at ``size``;
    returns the predictions folder."""
    import settings
    from export import main as export_main
    from export_classical import main as classical_main

    argv = ["export_pairs", str(CONFIG), name, "--set", f"data.root={shared_data / 'photos' / 'scannet'}",
            "--set", f"data.pairs={shared_data / 'photos' / 'scannet_sample_pairs_with_gt.txt'}",
            "--set", f"data.preprocessing.resize={size}"]
    assert (classical_main if tool == "sift" else export_main)(argv) == 0
    assert (settings.exper_path() / name / "config.yml").is_file()
    return settings.exper_path() / name / "predictions"


@pytest.mark.parametrize("tool", ["sift", "superpoint"])
def test_whole_pose_path_on_the_15_scannet_pairs(shared_data, tool, capsys):
    """SIFT and the shipped SuperPoint: export_pairs -> evaluation.py --pose, checked by hand on pair 0."""
    pred = export(tool, f"pose_{tool}", shared_data)
    files = sorted(pred.glob("*.npz"))
    assert len(files) == 15
    manifest = json.loads((pred.parent / "manifest.json").read_text())  # the staged export's record
    assert manifest["task"].startswith("export_classical export_pairs" if tool == "sift" else "export_pairs")
    assert manifest["expected"] == manifest["completed"] == 15 and len(manifest["files"]) == 15
    with np.load(files[0]) as z:
        assert set(z.files) >= {"K", "warped_K", "T_0to1", "prob", "warped_prob", "desc", "warped_desc"}
        assert "homography" not in z.files and z["image"].shape == (240, 320)
    sift = tool == "sift"
    assert evaluation_main([str(pred), "--pose", "--no-progress"] + (["--sift"] if sift else [])) == 0
    out = capsys.readouterr().out
    assert "AUC@5" in out and "threshold 1 px / mean focal" in out
    res = json.loads((pred.parent / "results.json").read_text())
    assert res["num_pairs"] == 15
    assert all(0.0 <= v <= 1.0 for v in res["metrics"]["pose_auc"].values())
    assert res["metrics"]["mean_matches"] > 20

    # pair 0 by hand: the intrinsics of the 320 x 240 images from the list's 1296 x 968 ones, and the
    # squared symmetric epipolar distance of its first matches from K0, K1 and T_0to1
    from tests.test_pose_evaluation import K_SCANNET, T_SCANNET, epipolar_by_hand

    K = np.array([[1163.45 * 320 / 1296, 0, (653.626 + 0.5) * 320 / 1296 - 0.5],
                  [0, 1164.79 * 240 / 968, (481.6 + 0.5) * 240 / 968 - 0.5], [0, 0, 1]])
    with np.load(files[0]) as z:
        assert np.allclose(z["K"], K) and np.allclose(z["warped_K"], K) and np.allclose(z["T_0to1"], T_SCANNET)
    detailed = evaluate_pose_folder(pred, load_pose_settings(sift=sift), progress=False, keep_drawing=True)
    d = detailed["drawing"][0]
    assert len(d["points0"]) >= 5
    by_hand = [epipolar_by_hand(a, b, K, K, T_SCANNET) for a, b in zip(d["points0"][:5], d["points1"][:5])]
    assert d["epipolar_error"][:5] == pytest.approx(by_hand, rel=1e-9)
    first = res["per_pair"][0]
    assert first["n_correct"] == int((d["epipolar_error"] < 5e-4).sum())
    assert first["precision"] == pytest.approx(first["n_correct"] / first["n_matches"])
    assert K_SCANNET[0, 0] == 1163.45  # the list's value the hand computation starts from


def test_export_tasks_check_the_pair_geometry(shared_data):
    from exporters.predictions import pair_dataset

    cfg = pose_config(shared_data / "photos" / "scannet", shared_data / "photos" / "scannet_sample_pairs_with_gt.txt",
                      "superglue", resize="[240,320]")
    with pytest.raises(UserError, match="items have no homography"):
        pair_dataset(cfg, "homography")
    hp = load_config(None, ["data.dataset=hpatches", f"data.root={shared_data / 'hpatches_real'}"])
    with pytest.raises(UserError, match="set data.dataset: pose_pairs"):
        pair_dataset(hp, "pose")
    assert set(PAIR_GEOMETRY) == {"homography", "pose"}
