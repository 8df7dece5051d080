"""The evaluation on a real HPatches pair (shared sample data) with OpenCV SIFT detections."""
import json

import cv2
import numpy as np
import pytest

from evaluation import main
from utils.io import atomic_save_npz, read_image_gray

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


def sift_predictions(im1, im2, H, name):
    sift = cv2.SIFT_create(nfeatures=1000)

    def detect(im):
        kp, desc = sift.detectAndCompute((im * 255).round().astype(np.uint8), None)
        return np.array([[p.pt[0], p.pt[1], p.response] for p in kp], np.float32), desc

    (p1, d1), (p2, d2) = detect(im1), detect(im2)
    return dict(image=im1, warped_image=im2, homography=H, prob=p1, warped_prob=p2, desc=d1, warped_desc=d2,
                name=np.array(name))


def test_boat_pair_with_sift_known_homography(shared_data, tmp_path, capsys):
    seq = shared_data / "hpatches_real" / "v_boat_pair"
    im1, im2 = read_image_gray(seq / "1.ppm"), read_image_gray(seq / "2.ppm")
    H = np.loadtxt(seq / "H_1_2")  # image 1 -> image 2, our convention
    pred = tmp_path / "sift_boat" / "predictions"
    pred.mkdir(parents=True)
    atomic_save_npz(pred / "0.npz", **sift_predictions(im1, im2, H, "v_boat_pair"))
    # the same detections with the inverse homography stored: every metric must collapse
    atomic_save_npz(pred / "1.npz", **sift_predictions(im1, im2, np.linalg.inv(H), "v_boat_pair_inverted"))
    assert main([str(pred), "--sift", "--no-progress"]) == 0
    res = json.loads((pred.parent / "results.json").read_text())
    good, bad = res["per_pair"]
    assert good["name"] == "v_boat_pair" and good["homography_ok"]
    assert good["corner_error"] < 3.0  # the scene is planar; SIFT recovers it within a few pixels
    assert good["repeatability"] > 0.4 and good["nn_ap"] > 0.5 and good["matching_score"] > 0.2
    assert bad["corner_error"] is None or bad["corner_error"] > 50
    assert bad["repeatability"] < 0.1 and bad["nn_ap"] < 0.1 and bad["matching_score"] < 0.05
    assert res["metrics"]["homography_accuracy"]["3"] == 0.5
