import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.collate import collate
from utils.config import load_config

# an 8 x 8-block label layout (4 x 8 blocks) used for the fixture masks
BLOCKS = np.array([[7, 7, 11, 11, 23, 23, 23, 0],
                   [7, 8, 11, 21, 23, 23, 1, 0],
                   [7, 8, 24, 26, 26, 21, 4, 5],
                   [7, 7, 24, 26, 26, 22, 6, 33]], dtype=np.uint8)
LABELS = np.kron(BLOCKS, np.ones((8, 8), np.uint8))  # 32 x 64


def config(*overrides):
    return load_config(None, list(overrides))


def write_cityscapes(root: Path, split="train", cities=("aachen", "bochum")):
    rng = np.random.default_rng(0)
    names = []
    for i, city in enumerate(cities):
        stem = f"{city}_00000{i}_000019"
        img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), np.roll(LABELS, 8 * i, axis=1))
        names.append(stem)
    return names


def test_cityscapes_fixture_tree_resize_and_label_sets(tmp_path):
    names = write_cityscapes(tmp_path / "datasets" / "Cityscapes")  # DATA_PATH/Cityscapes
    ds = get_dataset(config("data.dataset=cityscapes", "data.preprocessing.resize=[16, 32]"), "train")
    assert len(ds) == 2 and [ds[i]["name"] for i in range(2)] == names
    item = ds[1]
    assert item["image"].shape == (1, 16, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["seg"].shape == (16, 32) and item["seg"].dtype == torch.int64
    src = np.roll(LABELS, 8, axis=1)[1::2, 1::2]  # pixel-centre nearest sampling of a 2x downscale
    expected = np.where(np.isin(src, [0, 1, 2, 3]), 255, src)  # void -> ignore
    assert np.array_equal(item["seg"].numpy(), expected)

    cs4 = get_dataset(config("data.dataset=cityscapes", "data.segmentation.label_set=cs4",
                             "data.segmentation.ignore_index=250"), "train")[0]["seg"].numpy()
    assert cs4.shape == (32, 64)
    block = cs4[::8, ::8]  # one value per 8 x 8 block, full resolution
    assert block.tolist() == [[0, 0, 1, 1, 2, 2, 2, 250],
                              [0, 0, 1, 1, 2, 2, 250, 250],
                              [0, 0, 3, 3, 3, 1, 1, 3],
                              [0, 0, 3, 3, 3, 0, 0, 3]]
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 1, 16, 32) and batch["seg"].shape == (2, 16, 32)


def test_cityscapes_real_sample(shared_data):
    root = shared_data / "cityscapes_sample"
    raw = cv2.imread(str(root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"),
                     cv2.IMREAD_UNCHANGED)
    full = get_dataset(config("data.dataset=cityscapes", f"data.root={root}",
                              "data.segmentation.ignore_void=false"), "val")
    assert len(full) == 1
    item = full[0]
    assert item["name"] == "frankfurt_000000_000294" and item["image"].shape == (1, 128, 256)
    assert np.array_equal(item["seg"].numpy(), raw)
    assert sorted(np.unique(raw)) == [1, 2, 3, 4, 7, 8, 11, 13, 17, 20, 21, 23, 24, 26]
    half = get_dataset(config("data.dataset=cityscapes", f"data.root={root}", "data.segmentation.ignore_void=false",
                              "data.preprocessing.resize=[64, 128]"), "val")[0]
    assert half["image"].shape == (1, 64, 128) and half["seg"].shape == (64, 128)
    assert np.array_equal(half["seg"].numpy(), raw[1::2, 1::2])


def test_cityscapes_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "datasets" / "Cityscapes" / "leftImg8bit" / "val")):
        get_dataset(config("data.dataset=cityscapes"), "val")
    names = write_cityscapes(tmp_path / "cs", split="val")
    (tmp_path / "cs/gtFine/val/bochum" / f"{names[1]}_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{names[1]}_gtFine_labelIds.png: label file not found"):
        get_dataset(config("data.dataset=cityscapes", f"data.root={tmp_path / 'cs'}"), "val")


def test_cityscapes_without_gtfine_and_with_keypoint_labels(tmp_path):
    names = write_cityscapes(tmp_path / "cs", split="test")
    shutil.rmtree(tmp_path / "cs" / "gtFine")
    labels = tmp_path / "logs" / "my_export" / "predictions"  # data.labels is relative to EXPER_PATH
    (labels / "test").mkdir(parents=True)
    pts = np.array([[3.0, 4.0, 0.9], [10.5, 2.25, 0.1]], np.float32)
    np.savez(labels / "test" / f"{names[0]}.npz", pts=pts)
    ds = get_dataset(config("data.dataset=cityscapes", f"data.root={tmp_path / 'cs'}",
                            "data.labels=my_export/predictions"), "test")
    item = ds[0]
    assert "seg" not in item and torch.equal(item["keypoints"], torch.from_numpy(pts[:, :2]))
    with pytest.raises(FileNotFoundError, match=f"test/{names[1]}.npz: keypoint labels not found"):
        ds[1]


# ---- COCO panoptic -------------------------------------------------------------------------------
CATEGORIES = [{"id": 1, "name": "person", "isthing": 1}, {"id": 149, "name": "road", "isthing": 0},
              {"id": 187, "name": "sky-other-merged", "isthing": 0}, {"id": 250, "name": "mystery", "isthing": 0}]
SEG_IDS = np.zeros((16, 24), np.int64)
SEG_IDS[:6] = 70000          # sky (needs the B channel)
SEG_IDS[6:10, 4:12] = 300    # person (needs the G channel)
SEG_IDS[10:] = 5             # road
SEG_IDS[12:, 20:] = 9        # mystery category -> unlabeled
SEG_IDS[0, 0] = 0            # void
INFO = [{"id": 70000, "category_id": 187}, {"id": 300, "category_id": 1}, {"id": 5, "category_id": 149},
        {"id": 9, "category_id": 250}]


def expected_cs34():
    out = np.zeros(SEG_IDS.shape, np.int64)
    out[:6], out[6:10, 4:12], out[10:], out[12:, 20:], out[0, 0] = 23, 24, 7, 0, 0
    return out


def write_coco(root: Path, under_annotations=True, extra_unlabelled=True):
    img_dir = root / "val2017"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    stems = ["000000000001"] + (["000000000002"] if extra_unlabelled else [])
    for s in stems:
        cv2.imwrite(str(img_dir / f"{s}.jpg"), rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    base = root / "annotations" if under_annotations else root
    (base / "panoptic_val2017").mkdir(parents=True)
    rgb = np.stack([SEG_IDS % 256, (SEG_IDS // 256) % 256, SEG_IDS // 65536], axis=-1).astype(np.uint8)
    cv2.imwrite(str(base / "panoptic_val2017" / "000000000001.png"), rgb[..., ::-1])
    ann = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 16, "width": 24}],
           "annotations": [{"image_id": 1, "file_name": "000000000001.png", "segments_info": INFO}],
           "categories": CATEGORIES}
    (base / "panoptic_val2017.json").write_text(json.dumps(ann))


@pytest.mark.parametrize("under_annotations", [True, False])
def test_coco_panoptic_on_the_fly(tmp_path, under_annotations):
    write_coco(tmp_path / "datasets" / "COCO", under_annotations)
    cfg = config("data.dataset=coco_panoptic", "data.load_panoptic=true", "data.segmentation.ignore_void=false")
    with pytest.warns(UserWarning, match="1 of 2 images"):
        ds = get_dataset(cfg, "val")
    assert len(ds) == 1
    item = ds[0]
    assert item["name"] == "000000000001" and item["image"].shape == (1, 16, 24)
    assert item["image"].dtype == torch.float32 and item["seg"].dtype == torch.int64
    assert np.array_equal(item["seg"].numpy(), expected_cs34())
    # cs4 and a resize by 1/2 (nearest keeps the labels; void -> ignore)
    cfg = config("data.dataset=coco_panoptic", "data.load_panoptic=true", "data.segmentation.label_set=cs4",
                 "data.preprocessing.resize=[8, 12]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = get_dataset(cfg, "val")[0]["seg"].numpy()
    cs4 = {23: 2, 24: 3, 7: 0, 0: 255}
    assert np.array_equal(seg, np.vectorize(cs4.get)(expected_cs34()[1::2, 1::2]))


def test_coco_cs34_masks_need_no_json(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, extra_unlabelled=False)
    (root / "annotations" / "panoptic_val2017.json").unlink()
    mask_dir = root / "panoptic_cs34_val2017"
    mask_dir.mkdir()
    cv2.imwrite(str(mask_dir / "000000000001.png"), expected_cs34().astype(np.uint8))
    cfg = config("data.dataset=coco_panoptic", f"data.root={root}", "data.load_panoptic=true",
                 "data.use_cs34_masks=true")
    seg = get_dataset(cfg, "val")[0]["seg"].numpy()
    assert np.array_equal(seg, np.where(expected_cs34() == 0, 255, expected_cs34()))
    # without the cs34 masks the JSON is required, and the error says where it looked
    with pytest.raises(FileNotFoundError, match="panoptic_val2017.json: panoptic JSON not found"):
        get_dataset(config("data.dataset=coco_panoptic", f"data.root={root}", "data.load_panoptic=true"), "val")
    with pytest.raises(ValueError, match="use_cs34_masks.*load_panoptic"):
        get_dataset(config("data.dataset=coco_panoptic", f"data.root={root}", "data.use_cs34_masks=true"), "val")
    # images only
    item = get_dataset(config("data.dataset=coco_panoptic", f"data.root={root}"), "val")[0]
    assert "seg" not in item


def test_coco_panoptic_real_sample(shared_data):
    root = shared_data / "coco_sample"
    ds = get_dataset(config("data.dataset=coco_panoptic", f"data.root={root}", "data.load_panoptic=true"), "val")
    assert [ds[i]["name"] for i in range(len(ds))] == ["000000142238", "000000439180"]
    expected = {"000000142238": ((427, 640), {24, 5, 21, 23, 22}, 2712),
                "000000439180": ((360, 640), {24, 27, 5, 22, 21, 23}, 7189)}
    for item in ds:
        shape, classes, void = expected[item["name"]]
        seg = item["seg"].numpy()
        assert item["image"].shape == (1, *shape) and seg.shape == shape
        assert set(np.unique(seg)) == classes | {255} and (seg == 255).sum() == void
