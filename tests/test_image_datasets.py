"""The plain image datasets (coco, kitti, image_folder) on tiny trees in the real layouts and on
the shared sample data."""
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.keypoint_labels import save_keypoint_labels
from settings import exper_path
from tests.fixtures.image_trees import FOLDER_NAMES, coco_tree, folder_tree, kitti_raw_tree, kitti_sfm_tree, write_image
from utils.config import load_config


def cfg(dataset, root=None, **over):
    sets = [f"data.dataset={dataset}"] + ([f"data.root={root}"] if root else [])
    return load_config(None, sets + [f"{k}={v}" for k, v in over.items()])


def test_coco_layout_names_splits_and_resize(tmp_path, monkeypatch):
    coco_tree(tmp_path / "datasets" / "COCO")  # DATA_PATH/COCO (conftest points DATA_PATH here)
    train = get_dataset(cfg("coco", **{"data.preprocessing.resize": "[24,32]"}), "train")
    assert train.names == ["000000000100", "000000000101", "000000000102"]
    item = train[1]
    assert item["name"] == "000000000101" and item["image"].shape == (1, 24, 32)
    assert item["image"].dtype == torch.float32 and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
    assert "keypoints" not in item
    assert get_dataset(cfg("coco"), "val").names == ["000000000200", "000000000201"]
    assert get_dataset(cfg("coco"), "test").names == ["000000000200", "000000000201"]
    assert get_dataset(cfg("coco"), "val")[0]["image"].shape == (1, 40, 56)  # resize null keeps the size
    with pytest.raises(FileNotFoundError, match="train2017"):
        get_dataset(cfg("coco", tmp_path / "nowhere"), "train")


def test_kitti_raw_layout(tmp_path):
    root = kitti_raw_tree(tmp_path / "raw")
    ds = get_dataset(cfg("kitti", root), "train")  # no split file: every drive, left colour camera
    assert ds.names == [f"2011_09_26_drive_0001_sync_02/{f:010d}" for f in range(3)] + \
                      [f"2011_09_28_drive_0002_sync_02/{f:010d}" for f in range(3)]
    assert ds[4]["image"].shape == (1, 40, 56)
    # a split file picks sequences by name, either camera
    (root / "val.txt").write_text("2011_09_26_drive_0001_sync_03\n")
    val = get_dataset(cfg("kitti", root), "val")
    assert val.names == [f"2011_09_26_drive_0001_sync_03/{f:010d}" for f in range(3)]
    assert str(val.image_paths[0]).endswith("2011_09_26/2011_09_26_drive_0001_sync/image_03/data/0000000000.png")
    (root / "val.txt").write_text("2011_09_26_drive_0009_sync_02\n")
    with pytest.raises(FileNotFoundError, match="2011_09_26_drive_0009_sync_02"):
        get_dataset(cfg("kitti", root), "val")


def test_kitti_sfm_layout_with_split_folder(tmp_path):
    root = kitti_sfm_tree(tmp_path / "sfm", split_dir=tmp_path / "split")
    c = cfg("kitti", root, **{"data.root_split_txt": str(tmp_path / "split"), "data.preprocessing.resize": "[16,24]"})
    train, val = get_dataset(c, "train"), get_dataset(c, "val")
    assert train.names == [f"2011_09_26_drive_0001_sync_02/{f:010d}" for f in range(3)]
    assert val.names == [f"2011_09_26_drive_0002_sync_03/{f:010d}" for f in range(3)]
    assert train[0]["image"].shape == (1, 16, 24)
    # a missing split file in the named folder is an error, not "everything"
    with pytest.raises(FileNotFoundError, match="train.txt"):
        get_dataset(cfg("kitti", root, **{"data.root_split_txt": str(tmp_path)}), "train")


def test_image_folder_recursive_names_and_splits(tmp_path):
    root = folder_tree(tmp_path / "imgs")
    ds = get_dataset(cfg("image_folder", root, **{"data.preprocessing.resize": "[24,32]"}), "train")
    assert ds.names == FOLDER_NAMES  # sorted, recursive, hidden/non-image skipped, collisions keep the suffix
    assert get_dataset(cfg("image_folder", root), "val").names == FOLDER_NAMES
    assert ds[2]["image"].shape == (1, 24, 32)
    # a split folder selects sub-folders or files
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "val.txt").write_text("# validation\nb\na/y.png\n")
    val = get_dataset(cfg("image_folder", root, **{"data.root_split_txt": str(tmp_path / "split")}), "val")
    assert val.names == ["a/y", "b/c/z", "b/w"]
    with pytest.raises(ValueError, match="data.root"):
        get_dataset(cfg("image_folder"), "train")


def test_labels_are_read_checked_and_filtered(tmp_path):
    root = folder_tree(tmp_path / "imgs")
    labels = exper_path() / "lab" / "predictions"
    pts = np.array([[3.0, 4.0, 0.9], [10.5, 7.25, 0.2]], np.float32)
    save_keypoint_labels(labels / "train" / "a" / "x.npz", pts, (24, 32))
    save_keypoint_labels(labels / "train" / "dup.png.npz", pts[:1], (24, 32))
    c = cfg("image_folder", root, **{"data.labels": "lab/predictions", "data.preprocessing.resize": "[24,32]"})
    with pytest.warns(UserWarning, match="4 of 6 images have no keypoint labels"):
        ds = get_dataset(c, "train")
    assert ds.names == ["a/x", "dup.png"]
    torch.testing.assert_close(ds[0]["keypoints"], torch.from_numpy(pts[:, :2]))
    assert ds[1]["keypoints"].shape == (1, 2)
    # labels exported at another size do not fit these images
    c2 = cfg("image_folder", root, **{"data.labels": str(labels), "data.preprocessing.resize": "[48,64]"})
    with pytest.warns(UserWarning):
        ds2 = get_dataset(c2, "train")
    with pytest.raises(ValueError, match="exported for 24x32"):
        ds2[0]
    with pytest.raises(FileNotFoundError, match="no keypoint labels"):
        get_dataset(c, "val")


def test_unreadable_image_error_names_the_file(tmp_path):
    root = tmp_path / "imgs"
    write_image(root / "good.png", 0)
    (root / "bad.jpg").write_bytes(b"this is not a jpeg")
    ds = get_dataset(cfg("image_folder", root), "train")
    with pytest.raises(OSError, match="bad.jpg"):
        ds[0]


# ---- the shared sample data -----------------------------------------------------------------
def test_kitti_sfm_sample(shared_data):
    root = shared_data / "kitti_sfm"
    ds = get_dataset(cfg("kitti", root), "train")
    assert len(ds) == 108 and ds.sequences == ["2011_09_26_drive_0001_sync_02"]
    assert ds.names[0] == "2011_09_26_drive_0001_sync_02/0000000000"
    assert ds.names[-1] == "2011_09_26_drive_0001_sync_02/0000000107"
    item = ds[5]
    assert item["image"].shape == (1, 128, 416) and item["name"].endswith("/0000000005")
    assert get_dataset(cfg("kitti", root), "val").names == ds.names


def test_photos_sample_as_image_folder(shared_data):
    ds = get_dataset(cfg("image_folder", shared_data / "photos", **{"data.preprocessing.resize": "[240,320]"}),
                     "train")
    assert len(ds) == 60
    groups = {n.split("/")[0] for n in ds.names}
    assert groups == {"freiburg", "phototourism", "scannet"}
    assert sum(n.startswith("freiburg/") for n in ds.names) == 17
    item = ds[0]
    assert item["image"].shape == (1, 240, 320) and float(item["image"].std()) > 0.05


def test_coco_sample(shared_data):
    ds = get_dataset(cfg("coco", shared_data / "coco_sample", **{"data.preprocessing.resize": "[240,320]"}), "val")
    assert ds.names == ["000000142238", "000000439180"]
    assert ds[0]["image"].shape == (1, 240, 320)
