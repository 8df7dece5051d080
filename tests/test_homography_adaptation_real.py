"""Homography adaptation with the shipped MagicPoint on real KITTI frames and photographs."""
import argparse

import cv2
import numpy as np
import pytest

import settings
from datasets import get_dataset
from exporters import detector_labels
from tests.conftest import REPO
from utils.config import load_config

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

WEIGHTS = REPO / "pretrained" / "magicpoint_synth.pth"
TOP_K = 300


def export(config_file, root, name, size, eval_iter):
    cfg = load_config(REPO / config_file, [f"data.root={root}", f"data.preprocessing.resize={size}",
                                           "data.homography_adaptation.num=10", f"pretrained={WEIGHTS}",
                                           f"model.top_k={TOP_K}", f"eval_iter={eval_iter}", "device=cpu",
                                           "num_workers=0", "data.export_folder=train"])
    detector_labels.run(cfg, settings.exper_path() / name, argparse.Namespace())
    files = sorted((settings.exper_path() / name / "predictions" / "train").rglob("*.npz"))
    return cfg, {f.relative_to(settings.exper_path() / name).as_posix(): np.load(f)["pts"] for f in files}


def cornerness(image: np.ndarray) -> np.ndarray:
    """Shi-Tomasi corner response (smaller eigenvalue of the 5x5 structure tensor)."""
    return cv2.cornerMinEigenVal(image.astype(np.float32), blockSize=5, ksize=3)


@pytest.mark.parametrize("config_file,subdir,size", [
    ("configs/magicpoint_kitti_export.yaml", "kitti_sfm", "[128, 416]"),
    ("configs/magicpoint_folder_export.yaml", "photos", "[240, 320]"),
])
def test_shipped_magicpoint_exports_sane_keypoints(shared_data, config_file, subdir, size):
    cfg, first = export(config_file, shared_data / subdir, "ha_a", size, 3)
    _, second = export(config_file, shared_data / subdir, "ha_b", size, 3)
    assert len(first) == 3 and first.keys() == second.keys()
    dataset = get_dataset({**cfg, "data": {**cfg["data"], "labels": None}}, "train")
    h, w = (int(v) for v in size.strip("[]").split(","))
    for i in range(3):
        key = f"predictions/train/{dataset.names[i]}.npz"
        pts = first[key]
        np.testing.assert_array_equal(pts, second[key])  # deterministic across runs
        assert 20 <= len(pts) <= TOP_K  # a real detector finds corners in real images, within top-k
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= w - 1).all() and (pts[:, 1] >= 0).all() \
            and (pts[:, 1] <= h - 1).all()
        # keypoints sit on corners: the corner response there is well above the image average
        # (random points would score about the average)
        response = cornerness(dataset[i]["image"][0].numpy())
        xy = np.round(pts[:, :2]).astype(int)
        assert response[xy[:, 1], xy[:, 0]].mean() > 2.0 * response.mean()
