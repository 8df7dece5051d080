"""The embedded HPatches-style set: deterministic, in the HPatches layout, geometrically right."""
import shutil

import cv2
import numpy as np
import pytest

from datasets.embedded_hpatches import SEQUENCES, build_embedded_hpatches, ensure_embedded_hpatches, is_complete
from datasets.hpatches import HPatches
from utils.config import load_config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return ensure_embedded_hpatches(tmp_path_factory.mktemp("data"))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_twice(built, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    build_embedded_hpatches(again)
    a, b = _files(built), _files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_layout(built):
    names = sorted(p.name for p in built.iterdir() if p.is_dir())
    assert names == sorted(s[0] for s in SEQUENCES)
    assert 8 <= len(names) <= 12 and any(n.startswith("i_") for n in names) and any(n.startswith("v_") for n in names)
    for name, _, (h, w) in SEQUENCES:
        seq = built / name
        assert sorted(p.name for p in seq.iterdir()) == \
            [f"{k}.ppm" for k in range(1, 7)] + [f"H_1_{k}" for k in range(2, 7)]
        for k in range(1, 7):
            head = (seq / f"{k}.ppm").read_bytes()[:20].split(b"\n")
            assert head[0] in (b"P6", b"P5") and head[1] == f"{w} {h}".encode()
            assert cv2.imread(str(seq / f"{k}.ppm"), cv2.IMREAD_UNCHANGED).shape[:2] == (h, w)
        for k in range(2, 7):
            H = np.loadtxt(seq / f"H_1_{k}")
            assert H.shape == (3, 3)
            if name.startswith("i_"):
                np.testing.assert_array_equal(H, np.eye(3))
            else:
                assert np.abs(H - np.eye(3)).max() > 1e-3  # a real viewpoint change


def test_illumination_images_change(built):
    seq = built / "i_astronaut"
    first = cv2.imread(str(seq / "1.ppm")).astype(np.float64)
    diffs = [np.abs(cv2.imread(str(seq / f"{k}.ppm")).astype(np.float64) - first).mean() for k in range(2, 7)]
    assert min(diffs) > 2.0 and max(diffs) > 20.0  # on the 0-255 scale


def test_viewpoint_homographies_align_the_images(built):
    for name, _, (h, w) in SEQUENCES:
        if not name.startswith("v_"):
            continue
        img1 = cv2.imread(str(built / name / "1.ppm"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
        for k in range(2, 7):
            H = np.loadtxt(built / name / f"H_1_{k}")
            imgk = cv2.imread(str(built / name / f"{k}.ppm"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
            warped = cv2.warpPerspective(img1, H, (w, h))
            valid = cv2.erode(cv2.warpPerspective(np.ones((h, w)), H, (w, h), flags=cv2.INTER_NEAREST),
                              np.ones((5, 5))) > 0
            assert valid.mean() > 0.5
            a, b = warped[valid], imgk[valid]
            # the views differ by a small gain/offset and noise: residual after an affine intensity fit
            A = np.stack([a, np.ones_like(a)], 1)
            residual = np.abs(A @ np.linalg.lstsq(A, b, rcond=None)[0] - b).mean()
            ncc, ncc_unwarped = np.corrcoef(a, b)[0, 1], np.corrcoef(img1[valid], b)[0, 1]
            assert residual < 4.0 and ncc > 0.99 and ncc_unwarped < 0.9, (name, k, residual, ncc, ncc_unwarped)


def test_unfinished_copy_is_rebuilt(built, tmp_path):
    root = tmp_path / "hpatches_embedded"
    shutil.copytree(built, root)
    assert is_complete(root) and ensure_embedded_hpatches(tmp_path) == root
    (root / "v_camera" / "4.ppm").unlink()
    assert not is_complete(root)
    again = ensure_embedded_hpatches(tmp_path)
    assert again == root and is_complete(root) and (root / "v_camera" / "4.ppm").is_file()
    assert not list(tmp_path.glob(".hpatches_embedded*"))  # no temporary folders left


def test_loader_reads_embedded_set(built, monkeypatch, tmp_path):
    shutil.copytree(built, tmp_path / "hpatches_embedded")  # a finished copy is used as it is
    monkeypatch.setenv("SUPERPOINT_DATA_DIR", str(tmp_path))
    config = load_config(None, ["data.dataset=hpatches", "data.root=embedded", "data.preprocessing.resize=[240, 320]"])
    ds = HPatches(config, "test")
    assert len(ds) == 5 * len(SEQUENCES) and (tmp_path / "hpatches_embedded" / "MANIFEST").is_file()
    item = ds[len(ds) - 1]
    assert item["name"] == SEQUENCES[-1][0] and item["pair_index"] == 6
    assert item["image"].shape == (1, 240, 320)
