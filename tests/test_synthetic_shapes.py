import json
import os

import cv2
import numpy as np
import pytest
import torch

import settings
from datasets import get_dataset, shapes_primitives as sp, synthetic_shapes as ss
from utils.config import load_config

SIZE = (240, 320)
WITH_POINTS = [p for p in sp.PRIMITIVES if p not in ("draw_ellipses", "gaussian_noise")]


def small_config(*overrides, sizes="{training: 3, validation: 2, test: 1}", workers=1, resize="[60, 80]"):
    return load_config(None, [f"data.generation.split_sizes={sizes}", "data.generation.image_size=[120, 160]",
                              f"data.preprocessing.resize={resize}", "data.preprocessing.blur_size=3",
                              f"data.generation.num_workers={workers}", *overrides])


def structure_failures(img, background_value, points, r=4):
    """Points that are not on drawn structure: outside the image, no drawn pixel in their 3x3
    neighbourhood, or a flat (2r+1)^2 window (inside a face, not at a corner / junction / end)."""
    h, w = img.shape
    bad = 0
    for x, y in np.rint(points).astype(int):
        if not (0 <= x < w and 0 <= y < h):
            bad += 1
            continue
        win = img[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
        near = img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
        if win.max() == win.min() or not (near != background_value).any():
            bad += 1
    return bad


# ------------------------------------------------------------------------------------------
# primitives
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sp.PRIMITIVES)
def test_primitive_points_lie_on_drawn_corners(name):
    total = swapped_bad = 0
    for seed in range(6):
        background = np.full(SIZE, 90, np.uint8)
        img, pts = sp.draw(name, background, np.random.default_rng(seed))
        assert img.dtype == np.uint8 and img.shape == SIZE
        assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 2
        assert np.array_equal(background, np.full(SIZE, 90, np.uint8))  # input untouched
        assert not np.array_equal(img, background)
        if name in ("draw_ellipses", "gaussian_noise"):
            assert len(pts) == 0
            continue
        assert len(pts) > 0
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= SIZE[1] - 1).all()
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= SIZE[0] - 1).all()
        assert structure_failures(img, 90, pts) == 0
        total += len(pts)
        swapped_bad += structure_failures(img, 90, pts[:, ::-1])
    if name not in ("draw_ellipses", "gaussian_noise"):
        # the check is discriminative: (y, x) instead of (x, y) mostly lands off the structure
        assert swapped_bad > total / 2


@pytest.mark.parametrize("seed", range(5))
def test_polygon_points_are_exactly_its_vertices(seed):
    img, pts = sp.draw_polygon(np.zeros(SIZE, np.uint8), np.random.default_rng(seed))
    mask = img != 0  # fill level contrasts with the (zero) background mean
    redrawn = np.zeros(SIZE, np.uint8)
    cv2.fillPoly(redrawn, [pts.astype(np.int32).reshape(-1, 1, 2)], 255)
    assert np.array_equal(redrawn > 0, mask)
    swapped = np.zeros(SIZE, np.uint8)
    cv2.fillPoly(swapped, [pts[:, ::-1].astype(np.int32).reshape(-1, 1, 2)], 255)
    assert not np.array_equal(swapped > 0, mask)


@pytest.mark.parametrize("seed", range(4))
def test_multiple_polygons_corners_are_on_mask_boundary(seed):
    img, pts = sp.draw_multiple_polygons(np.zeros(SIZE, np.uint8), np.random.default_rng(seed))
    mask = img != 0  # textures keep >= 30 grey levels away from the zero background
    assert len(pts) >= 3
    for x, y in pts.astype(int):
        win = mask[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        assert mask[y, x] and not win.all(), (x, y)  # a corner, not hidden inside another polygon


@pytest.mark.parametrize("seed", range(6))
def test_cube_returns_seven_visible_vertices(seed):
    img, pts = sp.draw_cube(np.zeros(SIZE, np.uint8), np.random.default_rng(seed),
                            trans_interval=(0.5, 0.0), min_size_ratio=0.1, scale_interval=(0.3, 0.3))
    assert len(pts) == 7  # centred and small enough to be fully inside
    hull = cv2.convexHull(pts.astype(np.float32), returnPoints=False).ravel()
    assert len(hull) == 6  # six silhouette corners ...
    inner = pts[np.setdiff1d(np.arange(7), hull)][0]
    hull_poly = pts[hull].astype(np.float32).reshape(-1, 1, 2)
    assert cv2.pointPolygonTest(hull_poly, (float(inner[0]), float(inner[1])), True) > 2  # ... + the front one
    # the silhouette of the returned points is what was drawn
    mask = img != 0
    filled = np.zeros(SIZE, np.uint8)
    cv2.fillConvexPoly(filled, pts[hull].astype(np.int32), 1)
    assert (mask & (filled > 0)).sum() / filled.sum() > 0.98


def test_covered_stroke_ends_are_dropped():
    # stroke 0: (10,10)-(50,10); stroke 1 (5 px wide) passes over (50,10); stroke 2 far away
    a = np.array([[10, 10], [50, 0], [100, 100]])
    b = np.array([[50, 10], [50, 40], [120, 100]])
    ends = np.stack([a, b], 1).reshape(-1, 2)
    keep = sp._not_covered_by_later_strokes(ends, np.repeat(np.arange(3), 2), a, b, [3, 5, 3])
    assert keep.tolist() == [True, False, True, True, True, True]
    # an earlier stroke never hides a later one's end: stroke 0 crossing stroke 1's end
    keep = sp._not_covered_by_later_strokes(ends[2:4], [1, 1], a, b, [30, 5, 3])
    assert keep.tolist() == [True, True]


def test_random_colors_contrast_with_background():
    rng = np.random.default_rng(0)
    for bg in (0, 17, 128, 240, 255):
        c = sp.random_colors(rng, bg, 2000)
        assert c.min() >= 0 and c.max() <= 255
        assert np.abs(c - bg).min() >= sp.MIN_CONTRAST


def test_background_is_deterministic_and_blurred():
    a = sp.generate_background(SIZE, np.random.default_rng(3), min_kernel_size=20, max_kernel_size=40)
    b = sp.generate_background(SIZE, np.random.default_rng(3), min_kernel_size=20, max_kernel_size=40)
    c = sp.generate_background(SIZE, np.random.default_rng(4), min_kernel_size=20, max_kernel_size=40)
    assert a.dtype == np.uint8 and a.shape == SIZE
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # box-blurred binary noise: smooth (small steps between neighbours) but not flat
    assert a.max() > a.min()
    assert np.abs(np.diff(a.astype(int), axis=1)).max() < 40


def test_unknown_primitive_parameter_is_reported():
    with pytest.raises(ValueError, match=r"data.generation.params.draw_star: unknown parameter.*branches"):
        sp.resolve_params({"draw_star": {"branches": 4}})


# ------------------------------------------------------------------------------------------
# preprocessing and single samples
# ------------------------------------------------------------------------------------------
def test_resize_maps_a_known_point_exactly():
    img = np.zeros(SIZE, np.uint8)
    img[36:40, 100:104] = 255  # a 4x4 block centred at (x, y) = (101.5, 37.5)
    out, pts = ss.preprocess(img, np.array([[101.5, 37.5], [-1.0, 5.0]]), 0, (60, 80))
    assert pts.dtype == np.float32
    assert pts.tolist() == [[25.0, 9.0]]  # (x + 0.5) / 4 - 0.5; the point left of the image is dropped
    ys, xs = np.mgrid[:60, :80]
    weights = out.astype(np.float64)
    centroid = [(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()]
    assert centroid == pytest.approx([25.0, 9.0], abs=1e-6)  # the image moved exactly there


def test_generate_sample_resize_matches_full_resolution():
    gen = ss.generation_settings(small_config(resize="null"))
    gen_small = ss.generation_settings(small_config())
    img, pts = ss.generate_sample("draw_polygon", "training", 1, gen)
    img_s, pts_s = ss.generate_sample("draw_polygon", "training", 1, gen_small)
    assert img.shape == (120, 160) and img_s.shape == (60, 80)
    assert np.array_equal(img_s, cv2.resize(img, (80, 60), interpolation=cv2.INTER_LINEAR))
    assert np.allclose(pts_s, (pts + 0.5) * 0.5 - 0.5, atol=1e-6)


def test_generate_sample_is_deterministic():
    gen = ss.generation_settings(small_config())
    other_seed = ss.generation_settings(small_config("data.generation.random_seed=1"))
    a = ss.generate_sample("draw_checkerboard", "validation", 1, gen)
    b = ss.generate_sample("draw_checkerboard", "validation", 1, gen)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for img, _ in (ss.generate_sample("draw_checkerboard", "validation", 1, other_seed),
                   ss.generate_sample("draw_checkerboard", "validation", 2, gen),
                   ss.generate_sample("draw_checkerboard", "test", 1, gen)):
        assert not np.array_equal(a[0], img)


# ------------------------------------------------------------------------------------------
# generation on disk
# ------------------------------------------------------------------------------------------
def read_tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith((".png", ".npy")):
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_dataset_dir_hash_follows_pixel_settings():
    base = ss.dataset_dir(small_config())
    assert base.parent == settings.data_path() / "synthetic_shapes"
    assert base.name.startswith("v6_") and len(base.name) == len("v6_") + 8
    assert ss.dataset_dir(small_config(workers=2)) == base
    assert ss.dataset_dir(small_config("data.primitives=[draw_cube]")) == base
    for change in ("data.generation.image_size=[120, 128]", "data.preprocessing.blur_size=5",
                   "data.generation.random_seed=3",
                   "data.generation.params.draw_star.nb_branches=5"):
        assert ss.dataset_dir(small_config(change)) != base, change
    assert ss.dataset_dir(small_config(resize="[120, 160]")) != base
    assert ss.dataset_dir(small_config(resize="null")) != base
    assert ss.dataset_dir(small_config("data.suffix=mine")).name == "mine_" + base.name[3:]


def test_one_and_two_workers_write_identical_files(tmp_path):
    cfgs = [small_config("data.primitives=[draw_star, draw_multiple_polygons]", f"data.root={tmp_path / str(w)}",
                         workers=w, sizes="{training: 4, validation: 1, test: 0}") for w in (1, 2)]
    roots = [ss.ensure_generated(c, progress=False) for c in cfgs]
    files = [read_tree(r) for r in roots]
    assert len(files[0]) == 2 * 2 * 5  # 2 primitives x (png + npy) x 5 images
    assert files[0] == files[1]
    for split, n in (("training", 4), ("validation", 1), ("test", 0)):
        marker = json.loads((roots[0] / "draw_star" / f"{split}.complete.json").read_text())
        assert marker["count"] == n
    pts = np.load(roots[0] / "draw_star" / "points" / "training" / "0.npy")
    assert pts.dtype == np.float32 and pts.shape[1] == 2 and len(pts) >= 3
    img = cv2.imread(str(roots[0] / "draw_star" / "images" / "training" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (60, 80)


def test_half_finished_generation_is_redone(tmp_path, monkeypatch):
    cfg = small_config("data.primitives=[draw_lines, draw_cube]", f"data.root={tmp_path}")
    root = ss.ensure_generated(cfg, progress=False)
    reference = read_tree(root)

    # 1. a marker removed, files damaged: the unit is deleted and drawn again
    (root / "draw_cube" / "training.complete.json").unlink()
    (root / "draw_cube" / "images" / "training" / "0.png").write_bytes(b"garbage")
    # 2. a marker from other settings
    marker = root / "draw_lines" / "test.complete.json"
    marker.write_text(marker.read_text().replace('"hash": "', '"hash": "0'))
    # 3. a temporary folder left by a kill, beside a complete unit
    junk = root / "draw_lines" / ".tmp-validation" / "images"
    junk.mkdir(parents=True)
    (junk / "0.png").write_bytes(b"partial")
    ss.ensure_generated(cfg, progress=False)
    assert read_tree(root) == reference
    assert not list(root.glob("*/.tmp-*"))

    # 4. a run killed in the middle of a split: nothing of it is trusted afterwards
    (root / "draw_lines" / "training.complete.json").unlink()
    calls = {"n": 0}
    real = ss.generate_sample

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ss, "generate_sample", dying)
    with pytest.raises(KeyboardInterrupt):
        ss.ensure_generated(cfg, progress=False)
    assert (root / "draw_lines" / ".tmp-training" / "images" / "0.png").exists()
    assert not (root / "draw_lines" / "training.complete.json").exists()
    full_hash = ss._full_hash(ss.generation_settings(cfg))
    assert ss.unit_is_complete(root, "draw_cube", "training", full_hash, 3)
    assert not ss.unit_is_complete(root, "draw_lines", "training", full_hash, 3)
    monkeypatch.setattr(ss, "generate_sample", real)
    ss.ensure_generated(cfg, progress=False)
    assert read_tree(root) == reference
    assert not (root / "draw_lines" / ".tmp-training").exists()


# ------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------
def test_dataset_items_and_selection():
    selection = ["data.primitives=[draw_cube, draw_lines, draw_ellipses]",
                 "data.truncate={draw_lines: 0.5, draw_ellipses: 0.0}"]
    sizes = "{training: 4, validation: 2, test: 1}"
    cfg = small_config(*selection, sizes=sizes)
    train = get_dataset(cfg, "train")
    assert isinstance(train, ss.SyntheticShapes)
    names = [train[i]["name"] for i in range(len(train))]
    assert len(train) == 4 + 2 + 0
    assert sorted(names) == sorted([f"draw_cube/training/{i}" for i in range(4)] +
                                   [f"draw_lines/training/{i}" for i in range(2)])
    assert len(ss.SyntheticShapes(cfg, "val")) == 2 + 1
    assert len(ss.SyntheticShapes(cfg, "test")) == 1 + 0
    root = ss.dataset_dir(cfg)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["draw_cube", "draw_ellipses", "draw_lines"]

    item = train[names.index("draw_cube/training/2")]
    assert item["image"].shape == (1, 60, 80) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    png = cv2.imread(str(root / "draw_cube" / "images" / "training" / "2.png"), cv2.IMREAD_UNCHANGED)
    assert torch.equal(item["image"][0], torch.from_numpy(png.astype(np.float32) / 255))
    pts = np.load(root / "draw_cube" / "points" / "training" / "2.npy")
    assert item["keypoints"].dtype == torch.float32 and torch.equal(item["keypoints"], torch.from_numpy(pts))

    cached = ss.SyntheticShapes(small_config(*selection, "data.cache_in_memory=true", sizes=sizes), "train")
    for i in range(len(train)):
        a, b = train[i], cached[i]
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"])
        assert torch.equal(a["keypoints"], b["keypoints"])


def test_bad_primitive_names_are_clear_errors():
    with pytest.raises(ValueError, match=r"data.primitives: unknown primitive\(s\) draw_circle .*draw_lines"):
        ss.SyntheticShapes(small_config("data.primitives=[draw_lines, draw_circle]"), "train")
    with pytest.raises(ValueError, match=r"data.truncate: unknown primitive\(s\) draw_square"):
        ss.SyntheticShapes(small_config("data.truncate={draw_square: 0.5}"), "train")
    with pytest.raises(ValueError, match=r"split must be train, val or test"):
        ss.SyntheticShapes(small_config(), "training")
    assert not (settings.data_path() / "synthetic_shapes").exists()  # nothing generated on errors
