"""The homography adaptation export: label files, round trip into the training datasets, --outputImg,
resume, unreadable images, and sharding over torchrun processes."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets import get_dataset
from exporters import detector_labels as exporter
from models import build_network
from settings import exper_path
from tests.fixtures.image_trees import FOLDER_NAMES, coco_tree, folder_tree, kitti_sfm_tree, write_image
from utils.config import load_config

REPO = Path(__file__).resolve().parent.parent
EXPORT = [str(REPO / "export.py"), "export_detector_homoAdapt"]
CONFIGS = {"coco": "configs/magicpoint_coco_export.yaml", "kitti": "configs/magicpoint_kitti_export.yaml",
           "image_folder": "configs/magicpoint_folder_export.yaml"}


@pytest.fixture
def weights(tmp_path):
    """A seeded random-init MagicPoint (the trained one is not needed to test the plumbing)."""
    torch.manual_seed(0)
    path = tmp_path / "magicpoint_random.pth"
    torch.save(build_network("SuperPointNet_gauss2").state_dict(), path)
    return path


def small(weights, **over):
    """Overrides that make an export config tiny: 3 views of 32x48 images, fp32 on the CPU."""
    base = {"pretrained": str(weights), "data.preprocessing.resize": "[32,48]", "data.homography_adaptation.num": 3,
            "data.homography_adaptation.batch_size": 2, "num_workers": 0, "device": "cpu",
            "model.top_k": 50}
    base.update(over)
    return [f"{k}={v}" for k, v in base.items()]


def export_config(dataset, weights, **over):
    return load_config(CONFIGS[dataset], small(weights, **over))


def outputs(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dataset", ["coco", "kitti", "image_folder"])
def test_export_round_trip_into_training_labels(dataset, tmp_path, weights):
    if dataset == "coco":
        root = coco_tree(tmp_path / "coco")
    elif dataset == "kitti":
        root = kitti_sfm_tree(tmp_path / "kitti")
    else:
        root = folder_tree(tmp_path / "imgs")
    config = export_config(dataset, weights, **{"data.root": str(root)})
    stats = exporter.export(config, exper_path() / "ha", output_images=True)
    names = get_dataset(config, "train").names
    assert stats == exporter.ExportStats(done=len(names))
    pred = exper_path() / "ha" / "predictions" / "train"
    assert sorted(outputs(pred)) == sorted(f"{n}.npz" for n in names)
    if dataset == "image_folder":
        assert sorted(names) == sorted(FOLDER_NAMES)
    # joint training reads the same files back through the same loader
    train_cfg = load_config(None, [f"data.dataset={dataset}", f"data.root={root}", "data.labels=ha/predictions",
                                   "data.preprocessing.resize=[32,48]"])
    ds = get_dataset(train_cfg, "train")
    assert ds.names == names
    total = 0
    for i in range(len(ds)):
        item = ds[i]
        with np.load(pred / f"{item['name']}.npz") as f:
            pts, size = f["pts"], f["image_size"]
        assert pts.dtype == np.float32 and pts.shape[1] == 3 and size.tolist() == [32, 48]
        assert np.all(np.diff(pts[:, 2]) <= 0)  # sorted by score
        # remove_borders 4, then subpixel refinement moves points by at most 2 px (patch 5)
        assert np.all((pts[:, 0] >= 2) & (pts[:, 0] <= 45) & (pts[:, 1] >= 2) & (pts[:, 1] <= 29))
        np.testing.assert_array_equal(item["keypoints"].numpy(), pts[:, :2])
        total += len(pts)
        # --outputImg: the image with its points drawn (green)
        drawn = cv2.imread(str(exper_path() / "ha" / "images" / "train" / f"{item['name']}.png"))
        assert drawn.shape == (32, 48, 3)
        if len(pts):
            x, y = np.round(pts[0, :2]).astype(int)
            assert drawn[y, x, 1] > 200 and drawn[y, x, 0] < 100
    assert total > 0


def test_export_is_seeded_per_image_and_follows_the_config(tmp_path, weights):
    root = folder_tree(tmp_path / "imgs")
    a = exporter.export(export_config("image_folder", weights, **{"data.root": str(root)}), exper_path() / "a")
    b = exporter.export(export_config("image_folder", weights, **{"data.root": str(root), "eval_iter": 2}),
                        exper_path() / "b")
    assert a.done == 6 and b.done == 2
    fa, fb = outputs(exper_path() / "a" / "predictions"), outputs(exper_path() / "b" / "predictions")
    assert sorted(fb) == ["train/a/x.npz", "train/a/y.npz"]
    for k in fb:  # same image, same seed -> same homographies -> same file contents
        assert np.array_equal(np.load(fa[k])["pts"], np.load(fb[k])["pts"])
    c = exporter.export(export_config("image_folder", weights, **{"data.root": str(root), "eval_iter": 1,
                                                                   "data.export_folder": "val"}), exper_path() / "a")
    assert c.done == 1 and (exper_path() / "a" / "predictions" / "val" / "a" / "x.npz").is_file()
    with pytest.raises(exporter.UserError, match="export_folder"):
        exporter.export(export_config("image_folder", weights, **{"data.root": str(root),
                                                                   "data.export_folder": "test"}), exper_path() / "a")
    no_weights = export_config("image_folder", weights, **{"data.root": str(root)})
    no_weights["pretrained"] = None
    with pytest.raises(exporter.UserError, match="pretrained"):
        exporter.export(no_weights, exper_path() / "z")


def test_resume_skips_done_images_and_counts_unreadable_ones(tmp_path, weights, monkeypatch, capsys):
    root = folder_tree(tmp_path / "imgs")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    config = export_config("image_folder", weights, **{"data.root": str(root)})
    pred = exper_path() / "ha" / "predictions" / "train"

    # interrupted after the first image: one complete file, nothing half-written
    real = exporter.homography_adaptation
    calls = {"n": 0}

    def interrupt_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(exporter, "homography_adaptation", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        exporter.export(config, exper_path() / "ha")
    monkeypatch.setattr(exporter, "homography_adaptation", real)
    assert sorted(outputs(pred)) == ["a/x.npz"]
    first = np.load(pred / "a" / "x.npz")["pts"].copy()

    with pytest.warns(UserWarning, match=r"unreadable image: .*broken\.jpg"):
        stats = exporter.export(config, exper_path() / "ha")
    assert stats == exporter.ExportStats(done=5, skipped=1, failed=1)
    assert sorted(outputs(pred)) == sorted(f"{n}.npz" for n in FOLDER_NAMES)
    assert np.array_equal(np.load(pred / "a" / "x.npz")["pts"], first)

    with pytest.warns(UserWarning, match="broken"):
        again = exporter.run(config, exper_path() / "ha", argparse.Namespace())
    assert again == 0
    assert "0 exported, 6 skipped (already exported), 1 failed (unreadable)" in capsys.readouterr().out


def test_torchrun_shards_equal_the_single_process_export(tmp_path, weights):
    root = tmp_path / "imgs"
    for i in range(5):
        write_image(root / f"img{i}.png", 20 + i)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [CONFIGS["image_folder"]]
    sets = ["--set"] * 0
    for s in small(weights, **{"data.root": str(root), "data.homography_adaptation.num": 4}):
        sets += ["--set", s]
    single = subprocess.run([sys.executable, *EXPORT, *args, "single", *sets], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            *EXPORT, *args, "multi", *sets], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    # the counts of both ranks are summed: 5 exports in all, so no image was done twice
    assert "5 exported, 0 skipped" in multi.stdout, multi.stdout
    one, two = outputs(exper_path() / "single" / "predictions"), outputs(exper_path() / "multi" / "predictions")
    assert sorted(one) == sorted(two) == [f"train/img{i}.npz" for i in range(5)]
    for k in one:
        a, b = np.load(one[k]), np.load(two[k])
        assert np.array_equal(a["pts"], b["pts"]) and np.array_equal(a["image_size"], b["image_size"])


def test_labels_precision_is_inference_precision_recorded_and_never_mixed(tmp_path, weights):
    """Labels run in inference.precision (auto = fp32 whatever the training precision says), the
    export records it, a resumed export in another precision is refused, and bf16 labels are
    really computed in bf16 (they differ from the fp32 ones)."""
    import json

    from utils.cli import UserError

    root = folder_tree(tmp_path / "imgs")
    # the training precision says bf16: the labels stay fp32
    config = export_config("image_folder", weights, **{"data.root": str(root), "precision": "bf16"})
    out = exper_path() / "ha_prec"
    exporter.export(config, out)
    assert json.loads((out / exporter.PRECISION_RECORD).read_text()) == {"train": "fp32"}
    fp32 = {k: np.load(v)["pts"] for k, v in outputs(out / "predictions").items()}

    bf16_cfg = export_config("image_folder", weights, **{"data.root": str(root), "inference.precision": "bf16"})
    with pytest.raises(UserError, match="computed in fp32, this run would use bf16"):
        exporter.export(bf16_cfg, out)
    # labels exported before the record existed: resuming says their precision is unknown
    (out / exporter.PRECISION_RECORD).unlink()
    with pytest.warns(UserWarning, match="existing train labels have no precision record"):
        exporter.export(config, out)
    assert json.loads((out / exporter.PRECISION_RECORD).read_text()) == {"train": "fp32"}
    out2 = exper_path() / "ha_prec_bf16"
    exporter.export(bf16_cfg, out2)
    assert json.loads((out2 / exporter.PRECISION_RECORD).read_text()) == {"train": "bf16"}
    bf16 = {k: np.load(v)["pts"] for k, v in outputs(out2 / "predictions").items()}
    assert bf16.keys() == fp32.keys()
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(fp32.values(), bf16.values()))
    with pytest.raises(UserError, match="inference.precision: mixed is not available for homography adaptation"):
        exporter.export(export_config("image_folder", weights, **{"data.root": str(root),
                                                                  "inference.precision": "mixed"}), out2)
