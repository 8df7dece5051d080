"""HPatches loader: pairs, order, filters, errors, and exact homography conjugation."""
import math

import cv2
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.hpatches import HPatches, read_homography_file
from utils.config import load_config
from utils.geometry import warp_image, warp_points, warped_valid_mask
from utils.io import read_image_gray

H_V = np.array([[0.9, 0.08, 5.0], [-0.05, 1.1, -3.0], [2e-4, -1e-4, 1.0]])


def _write_seq(folder, sizes, homographies, rng):
    folder.mkdir(parents=True)
    for k, (h, w) in enumerate(sizes, start=1):
        cv2.imwrite(str(folder / f"{k}.ppm"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    for k, H in enumerate(homographies, start=2):
        np.savetxt(folder / f"H_1_{k}", H)


@pytest.fixture
def tree(tmp_path):
    """i_a: six 60x80 images (identity); v_b: three images of different sizes (fewer pairs)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "hp"
    _write_seq(root / "i_a", [(60, 80)] * 6, [np.eye(3)] * 5, rng)
    _write_seq(root / "v_b", [(50, 70), (64, 96), (45, 61)], [H_V, np.linalg.inv(H_V)], rng)
    (root / "not_a_sequence").mkdir()
    return root


def _config(root, resize=None, aspect_crop=True, alteration="all"):
    return load_config(None, ["data.dataset=hpatches", f"data.root={root}", f"data.alteration={alteration}",
                              f"data.preprocessing.resize={list(resize) if resize else 'null'}",
                              f"data.preprocessing.aspect_crop={str(aspect_crop).lower()}"])


def _scale_points(p, size_from, size_to):
    """Hand-written pixel-centre resize: x' = (x + 0.5) * W'/W - 0.5 (likewise y)."""
    sy, sx = size_to[0] / size_from[0], size_to[1] / size_from[1]
    return np.stack([(p[:, 0] + 0.5) * sx - 0.5, (p[:, 1] + 0.5) * sy - 0.5], axis=1)


def test_pairs_count_order_and_alteration(tree):
    ds = get_dataset(_config(tree), "test")
    assert [(p["name"], p["pair_index"]) for p in ds.pairs] == \
        [("i_a", k) for k in range(2, 7)] + [("v_b", 2), ("v_b", 3)]
    assert len(HPatches(_config(tree, alteration="i"), "test")) == 5
    v = HPatches(_config(tree, alteration="v"), "test")
    assert [(p["name"], p["pair_index"]) for p in v.pairs] == [("v_b", 2), ("v_b", 3)]
    item = v[1]
    assert item["name"] == "v_b" and item["pair_index"] == 3
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 48, 64)  # 50x70 -> multiples of 8
    assert item["warped_image"].shape == (1, 40, 56)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


@pytest.mark.parametrize("aspect_crop", [False, True])
def test_resized_homography_maps_points_like_resizing_them(tree, aspect_crop):
    size = (32, 48)
    ds = HPatches(_config(tree, resize=size, aspect_crop=aspect_crop, alteration="v"), "test")
    rng = np.random.default_rng(1)
    for idx, (orig1, origk, H) in enumerate([((50, 70), (64, 96), H_V), ((50, 70), (45, 61), np.linalg.inv(H_V))]):
        item = ds[idx]
        assert item["image"].shape == (1, *size) and item["warped_image"].shape == (1, *size)

        def kept(orig):  # top-left crop with the target aspect ratio (or the whole image)
            if not aspect_crop:
                return orig
            s = max(size[0] / orig[0], size[1] / orig[1])
            return (min(orig[0], math.floor(size[0] / s)), min(orig[1], math.floor(size[1] / s)))

        p = rng.uniform([0, 0], [30, 30], (20, 2))
        q = warp_points(p, H)
        expected = _scale_points(q, kept(origk), size)
        got = warp_points(_scale_points(p, kept(orig1), size), item["homography"].numpy())
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_resized_image_content(tree):
    ds = HPatches(_config(tree, resize=(32, 48), aspect_crop=True, alteration="v"), "test")
    orig = read_image_gray(tree / "v_b" / "1.ppm")
    # 50x70 -> s = max(32/50, 48/70) = 0.6857 -> keep 46x70 from the top-left, then resize
    ref = cv2.resize(orig[:46, :70], (48, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(ds[0]["image"][0].numpy(), ref, atol=1e-6)


def test_bad_homography_file_is_named(tree):
    (tree / "v_b" / "H_1_3").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match=r"v_b/H_1_3.*3x3"):
        HPatches(_config(tree), "test")
    (tree / "v_b" / "H_1_3").write_text("1 2 3\n2 4 6\n0 0 1\n")
    with pytest.raises(ValueError, match=r"v_b/H_1_3.*singular"):
        read_homography_file(tree / "v_b" / "H_1_3")
    (tree / "v_b" / "H_1_3").write_text("1 0 x\n0 1 0\n0 0 1\n")
    with pytest.raises(ValueError, match=r"v_b/H_1_3"):
        HPatches(_config(tree), "test")
    (tree / "v_b" / "H_1_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"v_b/H_1_3"):
        HPatches(_config(tree), "test")


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*hpatches-sequences-release.*embedded"):
        HPatches(_config(tmp_path / "nowhere"), "test")


def test_real_boat_pair_resized_homography(shared_data):
    """v_boat_pair (850x680) at 240x320: the conjugated H agrees with the original on real points
    and aligns the images."""
    root = shared_data / "hpatches_real"
    ds = HPatches(_config(root, resize=(240, 320), alteration="v"), "test")
    assert len(ds) == 1
    item = ds[0]
    H_orig = np.loadtxt(root / "v_boat_pair" / "H_1_2")
    # points of the original image 1 that stay inside both kept regions (680 rows -> 637 kept)
    xs, ys = np.meshgrid(np.linspace(100, 700, 7), np.linspace(100, 500, 5))
    p = np.stack([xs.ravel(), ys.ravel()], 1)
    q = warp_points(p, H_orig)
    kept = (637, 850)  # s = max(240/680, 320/850) = 0.3765; floor(240/s) = 637
    got = warp_points(_scale_points(p, kept, (240, 320)), item["homography"].numpy())
    np.testing.assert_allclose(got, _scale_points(q, kept, (240, 320)), atol=1e-6)

    # photometric check: image 1 warped by H matches image 2 far better than without warping
    img1, img2 = item["image"][None], item["warped_image"][None]
    H = item["homography"].float()[None]
    warped = warp_image(img1, H, (240, 320))[0, 0]
    valid = warped_valid_mask(H, (240, 320), (240, 320), border=3)[0, 0] > 0
    a, b, c = warped[valid].numpy(), img2[0, 0][valid].numpy(), img1[0, 0][valid].numpy()
    ncc = np.corrcoef(a, b)[0, 1]
    ncc_identity = np.corrcoef(c, b)[0, 1]
    assert ncc > 0.85 and ncc_identity < 0.3, (ncc, ncc_identity)


def test_real_illumination_sequences_have_fewer_pairs(shared_data):
    ds = HPatches(_config(shared_data / "hpatches_real", resize=(240, 320), alteration="i"), "test")
    assert [(p["name"], p["pair_index"]) for p in ds.pairs] == \
        [("i_construction_site", k) for k in range(2, 7)] + [("i_statue_crown", 2), ("i_statue_crown", 3)]
    np.testing.assert_allclose(ds[6]["homography"].numpy(), np.eye(3), atol=1e-12)
